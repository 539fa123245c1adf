"""OCR/ASR extraction on a real clip with burned-in Chinese text and synthetic speech (tests/data)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import verdict_json

from kuaimod_open.ingest import extract
from kuaimod_open.ingest.extract import ExtractConfig, TimedText, merge_lines, render, time_at

PROMO = Path(__file__).parent / "data" / "promo_zh.mp4"


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory: pytest.TempPathFactory):
    """One model/result cache for the module, so Whisper's two halves are joined once."""
    root = tmp_path_factory.mktemp("kuaimod-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("KUAIMOD_CACHE", str(root))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def promo_frames(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("decord")
    from kuaimod_open.ingest.frames import sample_frames

    return sample_frames(PROMO, tmp_path_factory.mktemp("frames"), 8)


# --------------------------------------------------------------------------- pure


def test_merge_lines_keeps_each_line_once_with_its_time_span():
    merged = merge_lines(
        [
            (0.5, [("扫码加微信", 0.99), ("限时福利", 0.98)]),
            (1.5, [("扫码 加微信", 0.97), ("限时福利!", 0.995)]),  # OCR noise: spacing, punctuation
            (4.5, [("领取红包", 0.99)]),
            (9.0, [("扫码加微信", 0.99)]),  # the same subtitle again later
        ]
    )
    assert [(m.text, m.start, m.end) for m in merged] == [
        ("扫码加微信", 0.5, 9.0),
        ("限时福利!", 0.5, 1.5),  # the better-scoring reading wins
        ("领取红包", 4.5, 4.5),
    ]


def test_render_and_time_at_locate_quotes_in_time():
    text = render([TimedText(start=4.0, end=7.0, text="领取红包"), TimedText(start=0.4, end=3.0, text="扫码加微信")])
    assert text == "[0.4s] 扫码加微信\n[4.0s] 领取红包"
    assert time_at(text, text.find("领取")) == 4.0
    assert time_at(text, text.find("加微信")) == 0.4
    assert time_at("no stamps here", 3) is None


# --------------------------------------------------------------------------- real models


@pytest.mark.video
def test_ocr_reads_burned_in_chinese_text_with_timestamps(promo_frames):
    pytest.importorskip("rapidocr_onnxruntime")
    lines = extract.ocr_frames(promo_frames)
    found = {line.text: line for line in lines}
    assert {"扫码加微信", "限时福利", "领取红包", "日赚500元"} <= set(found)
    assert len(lines) == len({line.text for line in lines}) == 4  # each line once across 9 frames
    assert found["扫码加微信"].start == 0.0 and found["扫码加微信"].end < 4.0
    assert 4.0 <= found["领取红包"].start < found["领取红包"].end < 8.0


def test_asr_transcribes_speech_with_segment_times(cache_env):
    pytest.importorskip("faster_whisper")
    segments = extract.transcribe(PROMO, language="en")
    text = " ".join(s.text for s in segments).lower()
    assert "qr code" in text and "channel" in text
    assert 0.0 <= segments[0].start < segments[-1].end <= 8.5
    # the offline model was joined once into the cache
    assert (cache_env / "models" / "whisper-base" / "model.bin").stat().st_size > 140_000_000


@pytest.mark.video
def test_video_without_audio_has_no_speech(video_dir):
    pytest.importorskip("faster_whisper")
    assert extract.transcribe(video_dir / "bikes.mp4") == []


def test_missing_file_is_an_input_error(tmp_path):
    from kuaimod_open.errors import InputError

    with pytest.raises(InputError, match="cannot read the video"):
        extract.video_digest(tmp_path / "nope.mp4")


@pytest.mark.video
def test_fill_text_is_cached_by_content_hash(promo_frames, cache_env, tmp_path, monkeypatch):
    pytest.importorskip("rapidocr_onnxruntime")
    pytest.importorskip("faster_whisper")
    from kuaimod_open.ingest.sample import Sample

    config = ExtractConfig(asr_language="en", cache_dir=tmp_path / "cache")
    sample = Sample(id="promo", video=PROMO, frames=promo_frames)
    filled = extract.fill_text(sample, config)
    assert filled.ocr.startswith("[0.0s] 扫码加微信\n")
    assert "QR code" in filled.asr and filled.asr.startswith("[")
    # a copy under another name is the same content: no model runs again
    copy = tmp_path / "renamed.mp4"
    shutil.copy(PROMO, copy)

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("extraction ran again despite the cache")

    monkeypatch.setattr(extract, "ocr_frames", boom)
    monkeypatch.setattr(extract, "transcribe", boom)
    again = extract.fill_text(sample.model_copy(update={"id": "copy", "video": copy}), config)
    assert (again.ocr, again.asr) == (filled.ocr, filled.asr)
    # fields that already have text are left alone
    given = sample.model_copy(update={"ocr": "given", "asr": "said"})
    assert extract.fill_text(given, config) == given


@pytest.mark.video
def test_pipeline_extracts_before_prompting_and_evidence_points_into_time(policy, template, cache_env, tmp_path):
    pytest.importorskip("rapidocr_onnxruntime")
    pytest.importorskip("faster_whisper")
    from kuaimod_open.ingest.sample import Sample
    from kuaimod_open.judge.backends.base import GenerateConfig
    from kuaimod_open.judge.backends.scripted import ScriptedBackend
    from kuaimod_open.judge.pipeline import ModerationConfig, moderate, prepare

    answer = verdict_json("PRIVATE_DEAL", evidence={"frames": [6], "text": [{"field": "ocr", "quote": "领取红包"}]})
    backend = ScriptedBackend([answer])
    config = ModerationConfig(
        frames=8,
        frames_dir=tmp_path / "frames",
        generate=GenerateConfig(batch_size=1),
        extract=ExtractConfig(asr_language="en"),
    )
    (verdict,) = moderate([Sample(id="promo", video=PROMO)], policy, backend, template, config)
    prompt = backend.history[0].messages[1].text
    assert "[0.0s] 扫码加微信" in prompt and "QR code" in prompt
    (span,) = verdict.evidence.text
    assert span.grounded and span.start is not None
    filled = prepare(Sample(id="promo", video=PROMO), config)  # cached: no model runs
    assert filled.ocr[span.start : span.end] == "领取红包"
    assert 4.0 <= (time_at(filled.ocr, span.start) or 0) < 8.0
