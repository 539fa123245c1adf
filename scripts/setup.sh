#!/usr/bin/env bash
# Create ./.venv with everything the tests and the offline demo need (fresh machine, no GPU).
# Usage: bash scripts/setup.sh        (VENV=path to use another folder, PYTHON=python3.11 to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# Pinned torch pair: on our machines pip takes these from local disk; an unpinned torch pulls several GB,
# and transformers' Qwen-VL processors need a torchvision that matches torch.
"$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
"$VENV/bin/python" -m pip install -q -e '.[all,train,dev]'
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
echo "environment ready in $VENV"
