from __future__ import annotations

import json

import pytest

from kuaimod_open.errors import ConfigError, InputError
from kuaimod_open.ingest.benchmark import load_benchmark, sample_from_row
from kuaimod_open.ingest.frames import frame_indices, sample_frames, scene_indices
from kuaimod_open.ingest.keys import video_inputs
from kuaimod_open.ingest.sample import VIDEO_EXTENSIONS


@pytest.mark.parametrize(
    ("total", "k", "expected"),
    [
        (100, 4, [0, 12, 37, 62, 87]),
        (9, 8, [0, 1, 2, 3, 5, 6, 7, 8]),  # short clip: distinct indices only
        (1, 8, [0]),
        (0, 8, []),
        (50, 0, [0]),
    ],
)
def test_frame_indices(total, k, expected):
    assert frame_indices(total, k) == expected


def test_frame_indices_cover_a_long_video_without_touching_every_frame():
    ten_minutes_at_30fps = 18_000
    picks = frame_indices(ten_minutes_at_30fps, 8)
    assert len(picks) == 9 and picks[0] == 0 and picks[-1] > 16_000
    assert all(b - a > 1000 for a, b in zip(picks[1:], picks[2:], strict=False))


def test_scene_indices_take_one_frame_per_shot():
    candidates = list(range(0, 120, 10))  # 12 candidates
    changes = [0, 1, 1, 1, 50, 1, 1, 1, 60, 1, 1, 1]  # cuts before candidates 4 and 8
    picks = scene_indices(candidates, changes, k=3)
    assert 0 in picks
    shots = [range(0, 40), range(40, 80), range(80, 120)]
    assert all(any(p in shot for p in picks) for shot in shots)


def test_scene_indices_fill_up_when_there_are_no_cuts():
    candidates = list(range(0, 320, 10))
    picks = scene_indices(candidates, [1.0] * len(candidates), k=8)
    assert len(picks) >= 8 and picks[0] == 0 and picks[-1] >= 280


@pytest.mark.video
def test_sample_frames_from_a_real_video(video_dir, tmp_path):
    pytest.importorskip("decord")
    from PIL import Image

    frames = sample_frames(video_dir / "bikes.mp4", tmp_path / "f", 8, max_side=320)
    assert len(frames) == 9
    stamps = [f.timestamp for f in frames]
    assert stamps[0] == 0.0 and stamps == sorted(stamps) and stamps[-1] > 5.0
    for frame in frames:
        with Image.open(frame.path) as image:
            assert max(image.size) == 320
            # a real decoded picture, not a blank frame
            assert len(image.convert("L").getcolors(256) or []) > 20


@pytest.mark.video
def test_scene_sampling_on_a_real_video(video_dir, tmp_path):
    pytest.importorskip("decord")
    frames = sample_frames(video_dir / "bigbuckbunny.mp4", tmp_path / "s", 6, mode="scene")
    assert 4 <= len(frames) <= 7 and frames[0].index == 0
    assert all(f.path.is_file() for f in frames)


@pytest.mark.video
@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such video"), (b"", "empty"), (b"this is not a video\n" * 10, "not a readable video")],
)
def test_unreadable_videos_raise_input_error(tmp_path, content, message):
    pytest.importorskip("decord")
    path = tmp_path / "clip.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        sample_frames(path, tmp_path / "out")


def test_benchmark_rows(tmp_path, frame_images):
    rows = [
        {
            "pid": "001",
            "tag": "色情低俗",
            "title": "t",
            "OCR": "o",
            "ASR": None,
            "images": [p.name for p in frame_images] + ["gone.jpg"],
        },
        {"pid": 2, "tag": "正向", "title": "t2", "OCR": "", "ASR": "a", "images": []},
    ]
    data = tmp_path / "bench.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", encoding="utf-8")
    samples = load_benchmark(data, frames_root=frame_images[0].parent)
    assert [s.id for s in samples] == ["001", "2"]
    assert len(samples[0].frames) == 3 and samples[0].frames[0].timestamp is None
    assert samples[0].label == "色情低俗" and samples[0].asr == ""
    assert load_benchmark(data)[0].frames == ()  # no frames folder: text only


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"tag": "正向"}, "missing 'pid'"),
        ({"pid": "1", "title": 5}, "'title' must be text"),
        ({"pid": "1", "images": "a.jpg"}, "list"),
    ],
)
def test_bad_rows(row, message):
    with pytest.raises(InputError, match=message):
        sample_from_row(row, line=7)


def test_bad_jsonl_line_and_duplicate_ids(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"pid": "1"}\n{oops\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.jsonl:2: not valid JSON"):
        load_benchmark(bad)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"pid": "1"}\n{"pid": "1"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="duplicate sample id '1'"):
        load_benchmark(dup)


def test_video_inputs(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/x.mp4", "a/y.MOV", "a/notes.txt", "b.mp4"):
        (tmp_path / name).write_bytes(b"x")
    found = video_inputs([tmp_path / "a", tmp_path / "b.mp4"], VIDEO_EXTENSIONS)
    assert [(p.name, sid) for p, sid in found] == [("x.mp4", "x"), ("y.MOV", "y"), ("b.mp4", "b")]
    with pytest.raises(ConfigError, match="Input not found"):
        video_inputs([tmp_path / "missing"], VIDEO_EXTENSIONS)
    with pytest.raises(ConfigError, match="No video files"):
        video_inputs([], VIDEO_EXTENSIONS)


def test_video_ids_are_unique_and_readable(tmp_path):
    for name in ("d/a.mp4", "d/b.mp4", "x/a.mp4", "y/a.mp4"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [sid for _, sid in video_inputs([tmp_path / "d"], VIDEO_EXTENSIONS)] == ["a", "b"]
    ids = [sid for _, sid in video_inputs([tmp_path / "x/a.mp4", tmp_path / "y/a.mp4"], VIDEO_EXTENSIONS)]
    assert ids == ["x/a", "y/a"]
