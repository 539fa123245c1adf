"""A corpus of bad inputs, generated here: each becomes a clear error verdict and the batch goes on."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from helpers import verdict_json

from kuaimod_open.errors import ConfigError, InputError, KuaimodError
from kuaimod_open.ingest.benchmark import load_benchmark
from kuaimod_open.judge.backends.scripted import ScriptedBackend
from kuaimod_open.judge.pipeline import ModerationConfig
from kuaimod_open.judge.policy import Decision

pytestmark = pytest.mark.video
av = pytest.importorskip("av")
pytest.importorskip("decord")


def write_video(path: Path, frames: int, size: tuple[int, int] = (160, 120), fps: int = 25) -> Path:
    """An H.264 mp4 of moving colour bars, written with PyAV."""
    with av.open(str(path), "w") as box:
        stream = box.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "25"}
        for i in range(frames):
            img = np.zeros((size[1], size[0], 3), dtype=np.uint8)
            img[:, :, 0] = (np.arange(size[0]) + 4 * i) % 256
            img[:, :, 1] = 40 * (i % 5)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in stream.encode(frame):
                box.mux(packet)
        for packet in stream.encode():
            box.mux(packet)
    return path


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as box:
        stream = box.add_stream("aac", rate=16000)
        stream.layout = "mono"
        samples = (np.sin(np.arange(16000) / 10) * 3000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 16000
        frame.time_base = Fraction(1, 16000)
        for packet in stream.encode(frame):
            box.mux(packet)
        for packet in stream.encode():
            box.mux(packet)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str | None]]:
    """Video files, and for each the expected error text (None: must be moderated normally)."""
    d = tmp_path_factory.mktemp("bad")
    expected: dict[str, str | None] = {}
    good = write_video(d / "good.mp4", 50)
    expected["good"] = None
    (d / "zero_bytes.mp4").write_bytes(b"")
    expected["zero_bytes"] = "empty (0 bytes)"
    (d / "text_named_mp4.mp4").write_text("this is a text file, not a video\n" * 20)
    expected["text_named_mp4"] = "not a readable video"
    data = good.read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 3])
    expected["truncated"] = "video"
    broken = bytearray(data)
    at = broken.find(b"moov")  # corrupt the index box
    broken[at : at + 400] = b"\x00" * 400
    (d / "broken_index.mp4").write_bytes(bytes(broken))
    expected["broken_index"] = "video"
    write_audio_only(d / "audio_only.mp4")
    expected["audio_only"] = "video"
    write_video(d / "one_frame.mp4", 1)
    expected["one_frame"] = None
    write_video(d / "huge_resolution.mp4", 3, size=(3840, 2160))
    expected["huge_resolution"] = None
    write_video(d / "long.mp4", 25 * 120, size=(64, 48))  # two minutes: must not be decoded whole
    expected["long"] = None
    return d, expected


def test_every_bad_video_becomes_an_error_verdict_and_the_rest_are_moderated(corpus, policy, template, tmp_path):
    from kuaimod_open.ingest.manifest import collect_items
    from kuaimod_open.serving.runner import RunnerConfig, run_job

    folder, expected = corpus
    out = tmp_path / "v.jsonl"
    backend = ScriptedBackend(default=verdict_json("BENIGN"))
    config = ModerationConfig(frames=4, frames_dir=tmp_path / "frames")
    summary = run_job(
        collect_items([folder], (), None),
        policy,
        backend,
        template,
        out,
        config,
        RunnerConfig(workers=1, progress=False),
    )
    verdicts = {v["sample_id"]: v for v in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert set(verdicts) == set(expected) and summary.written == len(expected)
    for sid, error in expected.items():
        v = verdicts[sid]
        if error is None:
            assert v["status"] == "ok" and v["decision"] == "allow", (sid, v["error"])
        else:
            assert v["status"] == "error" and v["decision"] == "review", sid
            assert error in v["error"] and "Traceback" not in v["error"], (sid, v["error"])
    assert verdicts["huge_resolution"]["provenance"]["frame_timestamps"]
    assert len(verdicts["long"]["provenance"]["frame_timestamps"]) == 5
    frames = sorted((tmp_path / "frames").rglob("*.jpg"))
    from PIL import Image

    assert all(max(Image.open(f).size) <= 640 for f in frames)  # 4K frames were resized


def test_non_utf8_huge_text_and_rows_with_missing_fields(tmp_path, policy, template):
    from kuaimod_open.judge.pipeline import moderate

    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(
        json.dumps({"pid": "big", "tag": "正向", "title": "标" * 200_000, "OCR": "x" * 500_000}).encode()
        + b"\n"
        + b'{"pid": "nofields"}\n'
    )
    samples = load_benchmark(rows)
    assert samples[1].title == "" and samples[1].label is None
    backend = ScriptedBackend(default=verdict_json("BENIGN"))
    verdicts = list(moderate(samples, policy, backend, template, ModerationConfig(frames_dir=tmp_path)))
    assert [v.decision for v in verdicts] == [Decision.ALLOW, Decision.ALLOW]
    assert len(backend.history[0].messages[1].text) < 12_000  # huge fields are clipped, not sent whole
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b'{"pid": "a", "title": "\xff\xfe bad bytes"}\n')
    with pytest.raises(InputError, match=r"binary.jsonl:1: not UTF-8 text \(bad byte at column 24\)"):
        load_benchmark(binary)


@pytest.mark.parametrize(
    ("name", "content"),
    [("m.csv", "id,title\n,no id here\n"), ("m.jsonl", '{"id": "a"}\n{broken\n'), ("m.csv", "title\nno path or id\n")],
)
def test_malformed_manifests_are_clear_errors(tmp_path, name, content):
    from kuaimod_open.ingest.manifest import load_manifest

    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(KuaimodError) as info:
        load_manifest(path)
    assert str(path.name) in str(info.value) or "row" in str(info.value) or "line" in str(info.value)


def test_missing_frame_files_are_skipped_and_a_missing_data_file_is_a_clear_error(tmp_path):
    (tmp_path / "images").mkdir()
    shutil.copy(Path(__file__), tmp_path / "images" / "a_0.jpg")  # present (its bytes are the backend's problem)
    row = {"pid": "a", "tag": "正向", "images": ["a_0.jpg", "missing.jpg"]}
    (tmp_path / "b.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    (sample,) = load_benchmark(tmp_path / "b.jsonl", tmp_path / "images")
    assert len(sample.frames) == 1
    with pytest.raises(ConfigError, match="Cannot open .*missing.jsonl: No such file"):
        load_benchmark(tmp_path / "missing.jsonl")
