"""The real transformers path: tiny random Qwen2-VL, real processor, real video frames."""

from __future__ import annotations

import pytest

from kuaimod_open.errors import BackendError
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.backends.base import GenerateConfig, Request
from kuaimod_open.judge.pipeline import ModerationConfig, moderate
from kuaimod_open.judge.policy import Decision
from kuaimod_open.judge.prompt import build_messages
from kuaimod_open.judge.verdict import ParseStatus

pytestmark = [pytest.mark.hf, pytest.mark.video]


def _requests(policy, template, samples):
    return [Request(s.id, build_messages(s, policy, template)) for s in samples]


def test_tiny_model_moderates_a_real_video(policy, template, hf_backend, videos, tmp_path):
    pytest.importorskip("decord")
    config = ModerationConfig(frames=4, frames_dir=tmp_path / "frames", generate=GenerateConfig(max_new_tokens=24))
    (verdict,) = moderate([Sample(id="bikes", video=videos[0], title="骑行日常")], policy, hf_backend, template, config)
    # random weights: the answer is noise that runs to max_new_tokens (cut off: an error) or ends unreadable;
    # either way a human looks at it
    assert verdict.decision is Decision.REVIEW
    assert verdict.status is ParseStatus.UNPARSED or "truncated_answer" in verdict.flags
    assert verdict.raw_output
    assert verdict.input_tokens > 100  # the frames were really packed into the prompt
    assert verdict.provenance.model == hf_backend.model_id
    assert len(verdict.provenance.frame_timestamps) == 5 and verdict.provenance.frame_timestamps[0] == 0.0


def test_batched_generation_matches_one_by_one(policy, template, hf_backend, frame_images):
    from kuaimod_open.ingest.sample import Frame

    samples = [
        Sample(id="a", frames=tuple(Frame(path=p) for p in frame_images), title="短标题"),
        Sample(id="b", frames=(Frame(path=frame_images[0]),), title="一个长得多的标题" * 20, ocr="字幕" * 50),
    ]
    config = GenerateConfig(max_new_tokens=12, batch_size=2)
    batched = hf_backend.generate(_requests(policy, template, samples), config)
    single = [hf_backend.generate(_requests(policy, template, [s]), config)[0] for s in samples]
    assert [g.error for g in batched] == [None, None]
    # left padding + attention mask must make batching invisible to greedy decoding
    assert [g.text for g in batched] == [g.text for g in single]
    assert batched[0].input_tokens != batched[1].input_tokens


def test_token_logprobs_are_exposed(policy, template, hf_backend):
    (gen,) = hf_backend.generate(
        _requests(policy, template, [Sample(id="x", title="t")]), GenerateConfig(max_new_tokens=8, logprobs=True)
    )
    assert gen.token_logprobs is not None and len(gen.token_logprobs) == gen.output_tokens
    assert all(lp <= 0.0 for _, lp in gen.token_logprobs)


def test_a_broken_frame_fails_only_its_own_request(policy, template, hf_backend, tmp_path, frame_images):
    from kuaimod_open.ingest.sample import Frame

    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    samples = [Sample(id="ok", frames=(Frame(path=frame_images[0]),)), Sample(id="bad", frames=(Frame(path=bad),))]
    ok, broken = hf_backend.generate(
        _requests(policy, template, samples), GenerateConfig(max_new_tokens=4, batch_size=2)
    )
    assert ok.error is None and ok.text
    assert broken.error


def test_lora_adapter_loads_and_is_recorded(tiny_model, tmp_path, policy, template):
    peft = pytest.importorskip("peft")
    import transformers

    from kuaimod_open.judge.backends.hf import HFBackend

    base = transformers.AutoModelForImageTextToText.from_pretrained(tiny_model)
    lora = peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    backend = HFBackend(str(tiny_model), adapter=str(tmp_path / "adapter"), device="cpu")
    assert backend.adapter == str(tmp_path / "adapter")
    (gen,) = backend.generate(
        _requests(policy, template, [Sample(id="x", title="t")]), GenerateConfig(max_new_tokens=4)
    )
    assert gen.error is None and gen.output_tokens


def test_bad_model_and_adapter_paths_are_clear_errors(tiny_model, tmp_path):
    from kuaimod_open.judge.backends.hf import HFBackend

    with pytest.raises(BackendError, match="Cannot load model"):
        HFBackend(str(tmp_path / "no-such-model"), device="cpu")
    with pytest.raises(BackendError, match="adapter directory not found"):
        HFBackend(str(tiny_model), adapter=str(tmp_path / "nope"), device="cpu")


def test_out_of_memory_on_a_batch_splits_it_and_retries(policy, template, hf_backend, monkeypatch):
    import torch

    real = hf_backend._generate_batch
    sizes: list[int] = []

    def tight_memory(batch, config):
        sizes.append(len(batch))
        if len(batch) > 1:  # pretend only one request fits on the GPU
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(batch, config)

    monkeypatch.setattr(hf_backend, "_generate_batch", tight_memory)
    samples = [Sample(id=f"s{i}", title=f"标题{i}") for i in range(4)]
    gens = hf_backend.generate(_requests(policy, template, samples), GenerateConfig(max_new_tokens=3, batch_size=4))
    assert [g.error for g in gens] == [None] * 4 and all(g.text for g in gens)
    assert sizes == [4, 2, 1, 1, 2, 1, 1]


@pytest.mark.parametrize(("arch", "patch", "model_class"), [
    ("qwen2_5_vl", 14, "Qwen2_5_VLForConditionalGeneration"),
    ("qwen3_vl", 16, "Qwen3VLForConditionalGeneration"),
])  # fmt: skip
def test_qwen2_5_vl_and_qwen3_vl_run_the_same_path(arch, patch, model_class, policy, template, videos, tmp_path):
    # The families the README promises, each through its own transformers classes and processor
    # (Qwen3-VL's 16-pixel patches change how frames are resized); batched, with log-probabilities.
    pytest.importorskip("decord")
    from kuaimod_open.judge.backends.hf import HFBackend
    from kuaimod_open.judge.backends.tiny import build_tiny_qwen_vl

    backend = HFBackend(str(build_tiny_qwen_vl(tmp_path / arch, arch=arch)), device="cpu")
    assert type(backend.model).__name__ == model_class and backend.patch_size == patch
    generate = GenerateConfig(max_new_tokens=12, batch_size=2, logprobs=True)
    config = ModerationConfig(frames=3, frames_dir=tmp_path / "frames", generate=generate)
    samples = [Sample(id="bikes", video=videos[0], title="骑行"), Sample(id="car", video=videos[1], title="车")]
    verdicts = list(moderate(samples, policy, backend, template, config))
    assert [v.sample_id for v in verdicts] == ["bikes", "car"]
    for v in verdicts:
        assert v.error is None or "truncated_answer" in v.flags  # random tokens rarely end their turn
        assert v.output_tokens and v.input_tokens > 50  # frames were packed
        assert v.decision is Decision.REVIEW  # random weights: never an automatic action
        assert len(v.provenance.frame_timestamps) == 4
    (text_only,) = backend.generate(_requests(policy, template, [Sample(id="t", title="标题")]), config.generate)
    assert text_only.error is None and text_only.token_logprobs


# --------------------------------------------------------------------------- issue #18


def _stub_generate(backend, answer: str, monkeypatch, *, end: bool):
    """Make the real model's generate return ``answer`` (then an end token or not), padded to the limit."""
    import torch

    tokenizer = backend.processor.tokenizer
    real = backend.model.generate

    def generate(**kwargs):
        out = real(**{**kwargs, "max_new_tokens": 1})
        prompt = kwargs["input_ids"]
        ids = tokenizer.encode(answer, add_special_tokens=False)[: kwargs["max_new_tokens"] - 1]
        if end:
            ids.append(tokenizer.convert_tokens_to_ids("<|im_end|>"))
        else:
            filler = tokenizer.encode(" 继续分析", add_special_tokens=False)
            while len(ids) < kwargs["max_new_tokens"]:
                ids.extend(filler)
            ids = ids[: kwargs["max_new_tokens"]]
        new = torch.tensor([ids] * prompt.shape[0], dtype=prompt.dtype)
        out.sequences = torch.cat([prompt, new], dim=1)
        return out

    monkeypatch.setattr(backend.model, "generate", generate)


def test_a_reasoning_cut_off_at_max_new_tokens_never_blocks(policy, template, hf_backend, monkeypatch):
    # The unfinished chain of thought has a label line; parsed, it would block. Cut off, it is an error
    # verdict for a person, exactly like the openai backend's finish_reason=length.
    unfinished = "### 3. Interim check\n类别：辱骂、引战、宣扬仇恨\n这一点还需要结合画面"
    _stub_generate(hf_backend, unfinished, monkeypatch, end=False)
    config = ModerationConfig(generate=GenerateConfig(max_new_tokens=40))
    (verdict,) = moderate([Sample(id="x", title="t")], policy, hf_backend, template, config)
    assert (verdict.status, verdict.decision) == (ParseStatus.ERROR, Decision.REVIEW)
    assert "truncated_answer" in verdict.flags and "max_new_tokens=40" in verdict.error
    assert verdict.raw_output.startswith("### 3. Interim check")


def test_an_answer_that_ends_its_turn_is_parsed(policy, template, hf_backend, monkeypatch):
    from helpers import verdict_json

    _stub_generate(hf_backend, verdict_json("HATE"), monkeypatch, end=True)
    config = ModerationConfig(generate=GenerateConfig(max_new_tokens=400))
    (verdict,) = moderate([Sample(id="x", title="t")], policy, hf_backend, template, config)
    assert (verdict.status, verdict.category, verdict.decision) == (ParseStatus.OK, "HATE", Decision.BLOCK)


def test_token_logprobs_are_the_models_own_under_qwen25_sampling_defaults(policy, template, hf_backend, frame_images):
    # The tiny checkpoint carries Qwen2.5-VL's published generation config (top_k=1, top_p=0.001,
    # temperature 0.1, repetition penalty 1.05). Log-probs read from the processed scores came out 0.0
    # for every sampled token; they must be the model's raw log-softmax, which a teacher-forced forward
    # pass over the same tokens reproduces.
    import torch

    from kuaimod_open.ingest.sample import Frame

    gen_config = hf_backend.model.generation_config
    assert (gen_config.top_k, gen_config.top_p, gen_config.repetition_penalty) == (1, 0.001, 1.05)
    sample = Sample(id="x", frames=(Frame(path=frame_images[0]),), title="扫码加微信")
    (request,) = _requests(policy, template, [sample])
    captured = {}
    real = hf_backend.model.generate

    def spy(**kwargs):
        captured["kwargs"] = kwargs
        captured["out"] = out = real(**kwargs)
        return out

    hf_backend.model.generate = spy
    try:
        (gen,) = hf_backend.generate([request], GenerateConfig(max_new_tokens=10, temperature=0.7, logprobs=True))
    finally:
        del hf_backend.model.generate
    # bounded memory: no per-step (batch, vocab) tensors kept by generate
    assert not captured["kwargs"].get("output_scores") and not captured["kwargs"].get("output_logits")
    reported = [lp for _, lp in gen.token_logprobs]
    assert reported and max(reported) < -1e-3, "log-probs of the processed (top_k=1) scores are all 0.0"

    inputs = {k: v for k, v in captured["kwargs"].items() if isinstance(v, torch.Tensor)}
    sequence = captured["out"].sequences
    prompt_len = inputs["input_ids"].shape[1]
    new_tokens = sequence.shape[1] - prompt_len
    token_types = torch.cat([inputs["mm_token_type_ids"], inputs["mm_token_type_ids"].new_zeros(1, new_tokens)], 1)
    with torch.inference_mode():
        logits = hf_backend.model(
            input_ids=sequence,
            attention_mask=torch.ones_like(sequence),
            mm_token_type_ids=token_types,
            pixel_values=inputs["pixel_values"],
            image_grid_thw=inputs["image_grid_thw"],
        ).logits
    steps = torch.log_softmax(logits[0, prompt_len - 1 : -1].float(), dim=-1)
    expected = steps.gather(-1, sequence[0, prompt_len:, None]).squeeze(-1).tolist()
    end = hf_backend._end_tokens() | {hf_backend.processor.tokenizer.pad_token_id}
    expected = [lp for t, lp in zip(sequence[0, prompt_len:].tolist(), expected, strict=True) if t not in end]
    assert reported == pytest.approx(expected, abs=1e-4)


def test_auto_device_loads_with_a_device_map(tiny_model, monkeypatch):
    # device_map="auto" spreads a teacher over every GPU (and CPU memory): > 35B models load at all.
    # (On a CPU-only machine accelerate puts everything on the CPU, so the call itself is checked.)
    import transformers

    from kuaimod_open.judge.backends.hf import HFBackend

    loads: list[dict] = []
    real = transformers.AutoModelForImageTextToText.from_pretrained

    def spy(*args, **kwargs):
        loads.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", spy)
    backend = HFBackend(str(tiny_model), device="auto")
    assert loads[-1].get("device_map") == "auto"
    assert backend.device == str(backend.model.device)
    HFBackend(str(tiny_model), device="cpu")  # an explicit device puts the whole model there
    assert "device_map" not in loads[-1]
