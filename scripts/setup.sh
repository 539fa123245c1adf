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
echo "environment ready in $VENV"
