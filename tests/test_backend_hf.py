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
    # random weights: the answer is noise, which must become "unparsed" and go to a human
    assert verdict.status is ParseStatus.UNPARSED and verdict.decision is Decision.REVIEW
    assert verdict.raw_output and verdict.output_tokens and 0 < verdict.output_tokens <= 24
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
        assert v.error is None and v.output_tokens and v.input_tokens > 50  # frames were packed
        assert v.decision is Decision.REVIEW  # random weights: never an automatic action
        assert len(v.provenance.frame_timestamps) == 4
    (text_only,) = backend.generate(_requests(policy, template, [Sample(id="t", title="标题")]), config.generate)
    assert text_only.error is None and text_only.token_logprobs
