"""Ingest: turn a video file or a benchmark row into a :class:`Sample` with timed frames and text.

A KuaiMod benchmark row looks like this (text abridged)::

    {"pid": "001", "tag": "色情低俗", "title": "他真不行 #憨憨日常",
     "OCR": "到底行不行。刚才还好使了的呢|...", "ASR": "...",
     "images": ["001_0.jpg", "001_1.jpg", ..., "001_8.jpg"]}

The benchmark ships pre-extracted frames (a cover plus up to 8 frames, no timestamps). For raw
videos we sample frames ourselves with decord: the first frame plus ``k`` frames spread evenly
over the video (or, in ``scene`` mode, one frame per detected shot), each with its timestamp, so
that verdict evidence can point at a moment in the video. Only the chosen frames are decoded:
decord seeks to the nearest key frame, so a long video is never decoded whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ._lazy import require
from .errors import ConfigError, InputError

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".flv", ".m4v", ".ts"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})

# 8 frames + the first frame mirrors the benchmark's own extraction (cover + 8 frames).
DEFAULT_FRAMES = 8
# Longest side of a saved frame. Qwen-VL resizes again to its pixel budget; 640 keeps OCR-sized
# text legible while a 9-frame prompt stays around 3k visual tokens for Qwen2-VL.
DEFAULT_MAX_SIDE = 640


class Frame(BaseModel):
    """One sampled frame: an image on disk and where it came from in the video."""

    model_config = ConfigDict(frozen=True)

    path: Path
    index: int | None = Field(default=None, description="Frame number in the source video")
    timestamp: float | None = Field(default=None, description="Seconds from the start; None when unknown")

    def label(self, position: int) -> str:
        """How the prompt and the UI refer to this frame, e.g. ``frame 3 @ 12.40s``."""
        when = f" @ {self.timestamp:.2f}s" if self.timestamp is not None else ""
        return f"frame {position}{when}"


class Sample(BaseModel):
    """One short video to moderate, with everything the judge may look at."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1)
    video: Path | None = None
    frames: tuple[Frame, ...] = ()
    title: str = ""
    ocr: str = ""
    asr: str = ""
    comments: tuple[str, ...] = ()
    label: str | None = Field(default=None, description="Gold tag (e.g. 正向), when known")

    @property
    def timestamps(self) -> list[float | None]:
        """The timestamp of every frame, in prompt order."""
        return [f.timestamp for f in self.frames]


class SamplingMode(StrEnum):
    """How frames are chosen from a video."""

    UNIFORM = "uniform"
    SCENE = "scene"
    KEYFRAME = "keyframe"  # the nearest key frames only: ~20x less decoding (kuaimod_open.keyframes)


# --------------------------------------------------------------------------- frame maths (pure)


def frame_indices(total: int, k: int) -> list[int]:
    """The first frame plus the centres of ``k`` equal segments of a ``total``-frame video.

    Pure and cheap, so it is tested without decord. Short videos yield fewer, distinct indices.
    """
    if total <= 0:
        return []
    if k <= 0:
        return [0]
    picks = [0] + [min(total - 1, int((i + 0.5) * total / k)) for i in range(k)]
    return sorted(set(picks))


def scene_indices(candidates: Sequence[int], changes: Sequence[float], k: int) -> list[int]:
    """Pick up to ``k`` frames plus the first so that each detected shot is represented once.

    ``changes[i]`` is how different candidate ``i`` looks from candidate ``i - 1`` (``changes[0]``
    is ignored). The ``k - 1`` largest changes split the candidates into at most ``k`` shots, and
    the middle candidate of each shot is kept; a video with fewer visible cuts keeps its shots
    and is topped up with evenly spread candidates, so the result still covers the whole video.
    """
    if len(candidates) != len(changes):
        raise ValueError("candidates and changes must have the same length")
    if not candidates:
        return []
    n = len(candidates)
    order = sorted(range(1, n), key=lambda i: changes[i], reverse=True)
    # A cut must stand out from the typical frame-to-frame change, else it is motion, not a shot.
    typical = float(np.median(changes[1:])) if n > 1 else 0.0
    cuts = sorted(i for i in order[: max(0, k - 1)] if changes[i] > 2.0 * typical + 1e-6)
    bounds = [0, *cuts, n]
    picked = {0} | {(lo + hi - 1) // 2 for lo, hi in zip(bounds, bounds[1:], strict=False)}
    # Too few shots: add evenly spread candidates, farthest from what is picked first, so the
    # whole video stays covered.
    spare = [i for i in frame_indices(n, k) if i not in picked]
    while spare and len(picked) < k + 1:
        best = max(spare, key=lambda i: min(abs(i - p) for p in picked))
        picked.add(best)
        spare.remove(best)
    return sorted(candidates[i] for i in picked)


# --------------------------------------------------------------------------- decoding (decord)


def sample_frames(
    video: str | Path,
    out_dir: str | Path,
    k: int = DEFAULT_FRAMES,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    mode: SamplingMode | str = SamplingMode.UNIFORM,
) -> tuple[Frame, ...]:
    """Decode the first frame plus ``k`` frames of ``video`` and save them as JPEGs in ``out_dir``.

    Raises:
        InputError: the file is missing, empty or not a decodable video.
        MissingDependencyError: decord is not installed (``pip install 'kuaimod_open[video]'``).
    """
    video = Path(video)
    mode = SamplingMode(mode)
    if mode is SamplingMode.KEYFRAME:
        from .keyframes import sample_keyframes

        return sample_keyframes(video, out_dir, k, max_side=max_side)
    reader = _open_video(video)
    total = len(reader)
    if total <= 0:
        raise InputError(f"{video}: the video has no frames")
    if mode is SamplingMode.SCENE:
        indices = _scene_aware_indices(video, total, k)
    else:
        indices = frame_indices(total, k)
    try:
        batch = reader.get_batch(indices).asnumpy()
        stamps = reader.get_frame_timestamp(indices)[:, 0]
    except Exception as exc:  # decord raises its own DECORDError (not exported) on broken streams
        raise InputError(f"{video}: cannot decode frames {indices[:3]}...: {_short(exc)}") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for idx, ts, pixels in zip(indices, stamps, batch, strict=True):
        path = out / f"frame_{idx:07d}.jpg"
        _save_jpeg(pixels, path, max_side)
        frames.append(Frame(path=path, index=int(idx), timestamp=round(float(ts), 3)))
    return tuple(frames)


def _open_video(video: Path, **size: int) -> Any:
    decord = require("decord", extra="video", purpose="sampling frames from video files")
    if not video.is_file():
        raise InputError(f"{video}: no such video file")
    if video.stat().st_size == 0:
        raise InputError(f"{video}: the file is empty (0 bytes)")
    try:
        return decord.VideoReader(str(video), ctx=decord.cpu(0), num_threads=1, **size)
    except Exception as exc:  # decord reports every open failure as a generic error; wrap it
        raise InputError(f"{video}: not a readable video ({_short(exc)})") from None


def _scene_aware_indices(video: Path, total: int, k: int) -> list[int]:
    # Score shot changes on tiny greyscale thumbnails of 4k evenly spread candidates: decoding
    # at 64x36 costs a fraction of full resolution and still shows cuts clearly.
    candidates = frame_indices(total, 4 * k)
    thumbs = _open_video(video, width=64, height=36).get_batch(candidates).asnumpy().astype(np.float32)
    grey = thumbs.mean(axis=3)
    changes = [0.0] + [float(np.abs(grey[i] - grey[i - 1]).mean()) for i in range(1, len(candidates))]
    return scene_indices(candidates, changes, k)


def _save_jpeg(pixels: np.ndarray, path: Path, max_side: int) -> None:
    from PIL import Image

    image = Image.fromarray(pixels)
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    image.save(path, format="JPEG", quality=90)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:300] if text else type(exc).__name__


# --------------------------------------------------------------------------- benchmark rows

_ROW_FIELDS = ("pid", "tag", "title", "OCR", "ASR", "images")


def sample_from_row(row: dict[str, Any], frames_root: Path | None = None, *, line: int | None = None) -> Sample:
    """Build a Sample from a KuaiMod benchmark row; frames are looked up under ``frames_root``.

    Missing frame files are skipped (the benchmark's frames live on the hub only), so a row
    without frames becomes a text-only sample. Raises :class:`InputError` for a row without a
    usable id or with fields of the wrong type.
    """
    where = f"row {line}" if line is not None else "row"
    pid = row.get("pid", row.get("id"))
    if pid is None or str(pid).strip() == "":
        raise InputError(f"{where}: missing 'pid' (every benchmark row needs an id)")
    for key in ("title", "OCR", "ASR", "tag"):
        value = row.get(key)
        if value is not None and not isinstance(value, str):
            raise InputError(f"{where} (pid {pid}): field '{key}' must be text, got {type(value).__name__}")
    images = row.get("images") or []
    if not isinstance(images, list):
        raise InputError(f"{where} (pid {pid}): field 'images' must be a list of file names")
    frames: list[Frame] = []
    if frames_root is not None:
        for name in images:
            path = Path(frames_root) / str(name)
            if path.is_file():
                frames.append(Frame(path=path))
    comments = row.get("comments") or ()
    return Sample(
        id=str(pid),
        frames=tuple(frames),
        title=row.get("title") or "",
        ocr=row.get("OCR") or "",
        asr=row.get("ASR") or "",
        comments=tuple(str(c) for c in comments),
        label=row.get("tag"),
    )


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-empty line; a bad line is a clear InputError."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"Cannot open {path}: {exc.strerror or exc}") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}:{number}: not UTF-8 text (bad byte at column {exc.start + 1})") from None
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{number}: each line must be a JSON object")
            yield number, obj


def load_benchmark(path: str | Path, frames_root: str | Path | None = None) -> list[Sample]:
    """Read a KuaiMod-format JSONL file (``pid, tag, title, OCR, ASR, images``) into Samples."""
    root = Path(frames_root) if frames_root is not None else None
    samples = [sample_from_row(row, root, line=n) for n, row in read_jsonl(path)]
    _check_unique_ids(samples, str(path))
    return samples


# --------------------------------------------------------------------------- CLI inputs


def discover_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders into the list of video files to moderate, in a stable order."""
    found: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS))
        elif path.exists():
            found.append(path)
        else:
            raise ConfigError(f"Input not found: {path}")
    if not found:
        raise ConfigError(
            "No video files found in the given inputs (looked for " + ", ".join(sorted(VIDEO_EXTENSIONS)) + ")"
        )
    return found


def video_sample_ids(paths: Sequence[Path]) -> list[str]:
    """Readable, unique ids for video files: the file stem, or the parent-qualified path on clashes."""
    stems = [p.stem for p in paths]
    ids = [
        s if stems.count(s) == 1 else str(p.with_suffix("")).strip("/").replace("/", "__")
        for s, p in zip(stems, paths, strict=True)
    ]
    if len(set(ids)) != len(ids):
        raise ConfigError("Two inputs resolve to the same sample id; pass each video once")
    return ids


def _check_unique_ids(samples: Sequence[Sample], source: str) -> None:
    seen: set[str] = set()
    for s in samples:
        if s.id in seen:
            raise InputError(f"{source}: duplicate sample id '{s.id}' (ids must be unique so runs can resume)")
        seen.add(s.id)


__all__ = [
    "DEFAULT_FRAMES",
    "DEFAULT_MAX_SIDE",
    "Frame",
    "Sample",
    "SamplingMode",
    "discover_inputs",
    "frame_indices",
    "load_benchmark",
    "read_jsonl",
    "sample_frames",
    "sample_from_row",
    "scene_indices",
    "video_sample_ids",
]
