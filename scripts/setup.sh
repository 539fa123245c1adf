#!/usr/bin/env bash
# Create ./.venv with everything the tests and the offline demo need (fresh machine, GPU or not).
# Usage: bash scripts/setup.sh        (VENV=path to use another folder, PYTHON=python3.11 to pick the interpreter)
#        bash scripts/setup.sh --torch-choice   print which torch build it would install, and why; change nothing
#   KUAIMOD_TORCH=auto|cpu|pypi       auto (default): a CPU build of torch on a machine without an NVIDIA GPU
#                                     when PyTorch's CPU index answers, else PyPI's build; cpu / pypi force one.
#   KUAIMOD_TORCH_INDEX=URL           the CPU index [https://download.pytorch.org/whl/cpu] (or a mirror of it)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

# Pinned torch pair: transformers' Qwen-VL processors need a torchvision that matches torch, and an
# unpinned torch pulls whatever is newest. On Linux x86_64, PyPI's torch is the CUDA build (~5.6 GB in
# the venv with its nvidia-* packages and triton); PyTorch's CPU index has the same release without them.
TORCH=(torch==2.14.1 torchvision==0.29.1)
CPU_INDEX=${KUAIMOD_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
has_nvidia_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q "GPU"; }
answers() {  # does a package index answer at all within 5 s? (honours the proxy settings)
  "$PY" - "$1" <<'EOF'
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="HEAD"), timeout=5)
except urllib.error.HTTPError:
    pass  # it answered
except (OSError, ValueError):
    sys.exit(1)
EOF
}
choice=${KUAIMOD_TORCH:-auto}
if [ "$choice" = auto ]; then
  if has_nvidia_gpu; then
    choice=pypi; why="an NVIDIA GPU is present"
  elif [ "$(uname -s)-$(uname -m)" != Linux-x86_64 ]; then
    choice=pypi; why="PyPI's build for $(uname -s) $(uname -m) is already CPU-only"
  elif answers "$CPU_INDEX/torch/"; then
    choice=cpu; why="no NVIDIA GPU here"
  else
    choice=pypi; why="no NVIDIA GPU here, but $CPU_INDEX did not answer (offline from it?), so PyPI's CUDA build"
  fi
else
  why="KUAIMOD_TORCH=$choice"
fi
if [ "${1:-}" = --torch-choice ]; then
  echo "$choice: $why"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip
if [ "$choice" = cpu ]; then
  echo "torch: CPU build from $CPU_INDEX ($why)"
  "${PIP[@]}" install -q --index-url "$CPU_INDEX" --extra-index-url "${PIP_INDEX_URL:-https://pypi.org/simple}" "${TORCH[@]}"
else
  echo "torch: PyPI build ($why)"
  "${PIP[@]}" install -q "${TORCH[@]}"
fi
"${PIP[@]}" install -q -e '.[all,train,dev]'
# The review UI's browser test drives Debian's chromium through Playwright (Playwright's own browser
# download is not used), and a fresh headless chromium shows Chinese as empty boxes without a CJK font.
# Install what is missing once, when apt-get may run (root or password-less sudo).
PACKAGES=()
command -v chromium >/dev/null 2>&1 || PACKAGES+=(chromium)
{ command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list :lang=zh family 2>/dev/null)" ]; } || PACKAGES+=(fonts-noto-cjk)
if [ "${#PACKAGES[@]}" -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=(); elif sudo -n true 2>/dev/null; then SUDO=(sudo -n); else SUDO=(none); fi
  if [ "${SUDO[0]:-}" != none ]; then
    { "${SUDO[@]}" apt-get update -qq \
        && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PACKAGES[@]}"; } >/dev/null 2>&1 \
      || echo "warning: could not install ${PACKAGES[*]}; tests/test_app_browser.py needs chromium and a CJK font" >&2
  else
    echo "note: ${PACKAGES[*]} missing and apt-get needs root; the browser test will skip or fail on Chinese text" >&2
  fi
fi
echo "environment ready in $VENV ($(du -sh "$VENV" 2>/dev/null | cut -f1))"
