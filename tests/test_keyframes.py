"""Key-frame sampling (--sampling keyframe) on real files, checked against exact decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kuaimod_open.errors import InputError
from kuaimod_open.ingest.frames import sample_frames
from kuaimod_open.ingest.keyframes import nearest, sample_keyframes, target_times
from kuaimod_open.ingest.sample import SamplingMode

pytestmark = pytest.mark.video
PROMO = Path(__file__).parent / "data" / "promo_zh.mp4"


def test_targets_and_nearest_key_frames():
    assert target_times(8.0, 4) == [0.0, 1.0, 3.0, 5.0, 7.0]
    assert target_times(0.0, 4) == [0.0]
    keys = np.array([0.0, 2.0, 4.0, 6.0])
    assert nearest(keys, [0.0, 1.2, 3.0, 5.0, 7.0]) == [0, 1, 2, 3]
    assert nearest(np.array([]), [1.0]) == []


def test_key_frames_match_exact_decoding(video_dir, tmp_path):
    decord = pytest.importorskip("decord")
    pytest.importorskip("av")
    video = video_dir / "bikes.mp4"  # 10 s with a key frame every ~2 s
    frames = sample_frames(video, tmp_path / "k", 8, mode=SamplingMode.KEYFRAME)
    stamps = [f.timestamp for f in frames]
    assert stamps[0] == 0.0 and stamps == sorted(stamps) and len(frames) >= 5
    reader = decord.VideoReader(str(video), num_threads=1)
    keys = {round(float(reader.get_frame_timestamp(int(i))[0]), 2) for i in reader.get_key_indices()}
    assert {round(s, 2) for s in stamps} <= keys  # every sampled frame is a real key frame
    for frame in frames[:3]:
        index = int(np.argmin(np.abs(reader.get_frame_timestamp(range(len(reader)))[:, 0] - frame.timestamp)))
        exact = Image.fromarray(reader[index].asnumpy()).resize(Image.open(frame.path).size)
        diff = np.abs(np.asarray(Image.open(frame.path), dtype=float) - np.asarray(exact, dtype=float)).mean()
        assert diff < 6.0, (frame.timestamp, diff)  # same picture; JPEG and the skipped deblocking differ slightly


def test_single_gop_clips_fall_back_to_exact_sampling(tmp_path):
    pytest.importorskip("decord")
    pytest.importorskip("av")
    assert sample_keyframes(PROMO, tmp_path / "k", 8) is None  # too few key frames: the caller decides
    frames = sample_frames(PROMO, tmp_path, 8, mode="keyframe")
    assert len(frames) == 9 and [f.timestamp for f in frames][:3] == [0.0, 0.5, 1.5]


def test_broken_file_is_an_input_error(tmp_path):
    pytest.importorskip("av")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00garbage" * 64)
    with pytest.raises(InputError, match="bad.mp4"):
        sample_keyframes(bad, tmp_path / "out", 8)


def test_long_videos_seek_instead_of_scanning(video_dir, tmp_path, monkeypatch):
    decord = pytest.importorskip("decord")
    pytest.importorskip("av")
    from kuaimod_open.ingest import keyframes

    monkeypatch.setattr(keyframes, "SEEK_AFTER_S", 1.0)  # treat the 10 s clip as "long"
    sought = keyframes.sample_keyframes(video_dir / "bikes.mp4", tmp_path, 8)
    reader = decord.VideoReader(str(video_dir / "bikes.mp4"), num_threads=1)
    keys = {round(float(reader.get_frame_timestamp(int(i))[0]), 2) for i in reader.get_key_indices()}
    stamps = [f.timestamp for f in sought]
    assert stamps[0] == 0.0 and stamps == sorted(set(stamps)) and len(stamps) >= 5
    assert {round(s, 2) for s in stamps} <= keys  # only key frames were decoded
