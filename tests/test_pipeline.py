from __future__ import annotations

from pathlib import Path

import pytest
from helpers import verdict_json

from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.backends.base import GenerateConfig, Generation
from kuaimod_open.judge.backends.scripted import ScriptedBackend
from kuaimod_open.judge.pipeline import ModerationConfig, moderate
from kuaimod_open.judge.policy import Decision
from kuaimod_open.judge.verdict import ParseStatus, Stage


def _config(tmp_path: Path, batch_size: int = 2) -> ModerationConfig:
    return ModerationConfig(frames=4, frames_dir=tmp_path / "frames", generate=GenerateConfig(batch_size=batch_size))


def test_one_verdict_per_sample_in_order_and_batched(policy, template, tmp_path):
    samples = [Sample(id=f"s{i}", title=f"t{i}") for i in range(5)]
    backend = ScriptedBackend(
        [verdict_json("BENIGN"), verdict_json("HATE"), "garbage", Generation(error="boom"), verdict_json("MISINFO")]
    )
    verdicts = list(moderate(samples, policy, backend, template, _config(tmp_path)))
    assert [v.sample_id for v in verdicts] == ["s0", "s1", "s2", "s3", "s4"]
    assert [v.decision for v in verdicts] == [
        Decision.ALLOW,
        Decision.BLOCK,
        Decision.REVIEW,
        Decision.REVIEW,
        Decision.RESTRICT,
    ]
    assert [v.status for v in verdicts][2:4] == [ParseStatus.UNPARSED, ParseStatus.ERROR]
    assert backend.batches == [2, 2, 1]
    assert verdicts[3].error == "boom"


def test_verdicts_carry_full_provenance(policy, template, tmp_path, frame_images):
    from kuaimod_open.ingest.sample import Frame

    sample = Sample(id="p", frames=tuple(Frame(path=p, timestamp=float(i)) for i, p in enumerate(frame_images)))
    backend = ScriptedBackend([verdict_json("BENIGN")], model_id="my-model")
    (verdict,) = moderate([sample], policy, backend, template, _config(tmp_path))
    prov = verdict.provenance
    assert prov.model == "my-model" and prov.adapter is None
    assert (prov.policy_version, prov.policy_digest) == (policy.version, policy.digest)
    assert prov.prompt_digest == template.digest
    assert prov.frame_timestamps == [0.0, 1.0, 2.0]
    assert verdict.raw_output == verdict_json("BENIGN")
    # the request really carried the frames
    assert backend.history[0].messages[1].images == tuple(frame_images)


@pytest.mark.video
def test_unreadable_video_becomes_an_error_verdict_and_the_run_goes_on(policy, template, tmp_path, videos):
    pytest.importorskip("decord")
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    samples = [
        Sample(id="good", video=videos[0]),
        Sample(id="broken", video=broken),
        Sample(id="good2", video=videos[1]),
    ]
    backend = ScriptedBackend(default=verdict_json("BENIGN"))
    verdicts = {v.sample_id: v for v in moderate(samples, policy, backend, template, _config(tmp_path, 3))}
    assert verdicts["broken"].status is ParseStatus.ERROR and verdicts["broken"].stage is Stage.PIPELINE
    assert verdicts["broken"].decision is Decision.REVIEW and "not a readable video" in verdicts["broken"].error
    assert verdicts["good"].decision is Decision.ALLOW and len(verdicts["good"].provenance.frame_timestamps) == 5
    assert backend.batches == [2]


def test_precedent_lookup_reaches_the_prompt(policy, template, tmp_path):
    backend = ScriptedBackend(default=verdict_json("BENIGN"))
    list(
        moderate(
            [Sample(id="x")], policy, backend, template, _config(tmp_path), precedents=lambda s: f"case for {s.id}"
        )
    )
    assert "case for x" in backend.history[0].messages[1].text


def test_empty_queue_never_allows(policy, template, tmp_path):
    (verdict,) = moderate([Sample(id="x")], policy, ScriptedBackend(), template, _config(tmp_path))
    assert verdict.decision is Decision.REVIEW and verdict.status is ParseStatus.ERROR
