"""The real-GPU guidance in the docs (issue #18 items 8, 11 and the prompt size): commands that fit in memory."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", REPO / "BENCHMARKS.md", REPO / "kuaimod_open" / "judge" / "backends" / "openai_api.py"]


def _commands(text: str, program: str) -> list[str]:
    """Shell commands starting with ``program`` (continuation lines joined)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [m.group(0) for m in re.finditer(rf"(?:^|\s)(?:CUDA_VISIBLE_DEVICES=\S+ )?{program} [^\n]*", joined)]


def test_every_vllm_command_bounds_context_memory_and_images():
    # Without --max-model-len vLLM sizes for the checkpoint's 128k context, without --gpu-memory-utilization it
    # takes 90% of the GPU, and without image limits its profiling assumes the worst case.
    commands = [c for doc in DOCS for c in _commands(doc.read_text(encoding="utf-8"), "vllm serve")]
    assert len(commands) >= 3
    for command in commands:
        assert "--max-model-len 16384" in command, command
        assert "--gpu-memory-utilization" in command, command
        assert "--limit-mm-per-prompt" in command, command


def test_the_lora_recipe_keeps_the_served_teacher_off_the_training_gpu():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    recipe = readme[readme.index("### LoRA updates") : readme.index("## Editing the policy")]
    teachers = _commands(recipe, "vllm serve")
    assert teachers and all("CUDA_VISIBLE_DEVICES=1" in t for t in teachers)
    trainings = [
        c for c in _commands(recipe, "kuaimod update lora") + _commands(recipe, "kuaimod") if "update lora" in c
    ]
    assert trainings and all("--epochs" in c and "--steps" not in c for c in trainings)
    served = [c for c in trainings if "--teacher-backend openai" in c]
    assert served and all("CUDA_VISIBLE_DEVICES=0" in c for c in served)
    assert "--teacher-device auto" in recipe  # the one-GPU recipe: an hf teacher, freed before training


def test_the_memory_guidance_matches_the_estimate():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    # the 24 GB claim for a 7B at batch 8 is gone; the table says why
    assert not re.search(r"Qwen2\.5-VL-7B-Instruct --batch-size 8", readme)
    import importlib.util

    spec = importlib.util.spec_from_file_location("memory_estimate", REPO / "bench" / "memory_estimate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    hidden, layers, heads, kv_heads, inter, vocab, tied = module.MODELS["Qwen2.5-VL-7B"]
    params = module.parameters(hidden, layers, heads, kv_heads, inter, vocab, tied)
    assert abs(params / 1e9 - 8.29) < 0.01  # the published parameter count of Qwen2.5-VL-7B-Instruct
    assert f"{params * 2 / 1024**3:.1f}" in readme  # its bf16 weights, as the table states them


def test_the_prompt_size_and_context_are_stated():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "**Prompt size**" in readme and "bench/prompt_size.py" in readme
    assert "--max-model-len 16384" in readme and "--enable-prefix-caching" in readme
