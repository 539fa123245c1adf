"""The unit of work: a :class:`Sample` (one short video, its timed frames and its text), and input discovery.

Frames come from :mod:`kuaimod_open.ingest.frames` (raw videos) or from a benchmark row's images
(:mod:`kuaimod_open.ingest.benchmark`); text from the row, a manifest, or OCR/ASR
(:mod:`kuaimod_open.ingest.extract`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kuaimod_open.errors import ConfigError, InputError
from kuaimod_open.ingest.keys import SampleKey
from kuaimod_open.ingest.pdq import VideoHashes

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
    pdq: str | None = Field(
        default=None, description="PDQ hash of the saved image (kuaimod_open.ingest.pdq), for grouping OCR"
    )

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
    hashes: VideoHashes | None = Field(
        default=None, description="PDQ frame hashes at a fixed rate, computed once in preparation (hash bank)"
    )
    key: SampleKey | None = Field(
        default=None, description="Identity of id + content (kuaimod_open.ingest.keys); set when the sample is prepared"
    )

    @property
    def timestamps(self) -> list[float | None]:
        """The timestamp of every frame, in prompt order."""
        return [f.timestamp for f in self.frames]


class SamplingMode(StrEnum):
    """How frames are chosen from a video."""

    UNIFORM = "uniform"
    SCENE = "scene"
    KEYFRAME = "keyframe"  # the nearest key frames only: ~20x less decoding (kuaimod_open.ingest.keyframes)


# --------------------------------------------------------------------------- files


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
            if number == 1:
                text = text.removeprefix("\ufeff")  # a byte-order mark from Windows editors is not content
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{number}: each line must be a JSON object")
            yield number, obj


def _check_unique_ids(samples: Sequence[Sample], source: str) -> None:
    seen: set[str] = set()
    for s in samples:
        if s.id in seen:
            raise InputError(f"{source}: duplicate sample id '{s.id}' (ids must be unique so runs can resume)")
        seen.add(s.id)


__all__ = [
    "DEFAULT_FRAMES",
    "DEFAULT_MAX_SIDE",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "Frame",
    "Sample",
    "SamplingMode",
    "read_jsonl",
]
