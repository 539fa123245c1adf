"""PDQ frame hashes of a video, taken at a fixed rate in the style of vPDQ (Meta's video PDQ).

PDQ (``pdqhash``, a binding of Meta's reference implementation) turns an image into a 256-bit hash
and a quality score (0-100). Two frames whose hashes differ in at most ~31 bits (Hamming distance)
show the same picture, after re-encoding, resizing or a small overlay. A video is hashed as
vPDQ does: one frame per ``1 / fps`` seconds, each with its timestamp and quality, and a frame that
is a near-duplicate of the previous kept one is dropped (a still shot costs one hash, not one per
second). Every kept frame also carries the hash of its left-right mirror image, taken from the same
DCT (PDQ's dihedral hashes cost almost nothing extra), so a mirrored re-upload still matches.

Hex strings follow the reference implementation and ThreatExchange's ``pdq`` signal: 64 lower-case
hex digits, most significant bit first.

The hashes are computed once, in preparation (:func:`kuaimod_open.judge.pipeline.prepare`), stored
with the sample and reused by the hash bank (:mod:`kuaimod_open.loop.bank`), the match stage
(:mod:`kuaimod_open.first_stage.match`) and OCR grouping (:mod:`kuaimod_open.ingest.extract`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kuaimod_open._lazy import require
from kuaimod_open.errors import InputError, MissingDependencyError

HASH_BITS = 256
HASH_BYTES = HASH_BITS // 8
# Frames below this quality (flat, dark, blurred) carry too little structure to match on
# (ThreatExchange's PdqSignal uses the same bar).
MIN_QUALITY = 50
# Consecutive frames at most this far apart are one picture: the later one is dropped.
DEDUPE_DISTANCE = 8
# PDQ's own downscaling works on any size; hashing a 512-px copy costs a tenth of a 1080p frame
# and is what the algorithm's paper recommends.
HASH_SIDE = 512
# Position of the left-right mirror in pdqhash.compute_dihedral's output (original, rot90, rot180,
# rot270, flip about the x axis, flip about the y axis, ...): measured, see tests/test_pdq.py.
_MIRROR = 5


class FrameHash(BaseModel):
    """The PDQ hash of one frame: when it is, how good it is, and its mirror image's hash."""

    model_config = ConfigDict(frozen=True)

    timestamp: float = Field(description="Seconds from the start of the video")
    quality: int = Field(ge=0, le=100, description="PDQ quality; frames below 50 are not matched on")
    pdq: str = Field(pattern=r"^[0-9a-f]{64}$", description="PDQ hash, 64 hex digits, most significant bit first")
    mirror: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="PDQ hash of the left-right mirrored frame"
    )


class VideoHashes(BaseModel):
    """A video's PDQ hashes at a fixed rate (near-duplicate consecutive frames dropped)."""

    model_config = ConfigDict(frozen=True)

    algorithm: str = "pdq"
    fps: float = Field(gt=0, description="Frames hashed per second of video before de-duplication")
    duration: float | None = Field(default=None, description="Seconds, when known")
    frames: tuple[FrameHash, ...] = ()

    def usable(self) -> list[FrameHash]:
        """The frames good enough to match on (quality >= 50)."""
        return [f for f in self.frames if f.quality >= MIN_QUALITY]


@dataclass(frozen=True)
class HashConfig:
    """How videos are hashed in preparation."""

    fps: float = 1.0
    dedupe_distance: int = DEDUPE_DISTANCE
    side: int = HASH_SIDE
    # Videos longer than this are hashed from their key frames only (decoding a 10-minute 720p clip
    # frame by frame costs ~40 CPU-s); short-video platforms put a key frame every 1-5 s anyway.
    full_decode_max_s: float = 180.0


# --------------------------------------------------------------------------- hex and bits (pure)


def bits_to_hex(bits: np.ndarray) -> str:
    """256 bits (most significant first, as pdqhash returns them) as 64 hex digits."""
    return bytes(np.packbits(np.asarray(bits, dtype=np.uint8))).hex()


def hex_to_bytes(value: str) -> np.ndarray:
    """A 64-hex PDQ hash as 32 bytes (uint8), the layout faiss binary indexes use."""
    value = value.strip().lower()
    if len(value) != 2 * HASH_BYTES:
        raise InputError(f"a PDQ hash has 64 hex digits, got {len(value)}: {value[:80]!r}")
    try:
        return np.frombuffer(bytes.fromhex(value), dtype=np.uint8).copy()
    except ValueError:
        raise InputError(f"not a hex PDQ hash: {value[:80]!r}") from None


def hexes_to_array(values: Sequence[str]) -> np.ndarray:
    """Many hashes as an ``(n, 32)`` uint8 array."""
    if not values:
        return np.zeros((0, HASH_BYTES), dtype=np.uint8)
    return np.stack([hex_to_bytes(v) for v in values])


def hamming(a: str, b: str) -> int:
    """Hamming distance of two hex hashes."""
    return int(np.unpackbits(hex_to_bytes(a) ^ hex_to_bytes(b)).sum())


def distances(queries: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """All Hamming distances between ``(m, 32)`` and ``(n, 32)`` uint8 hash arrays, as ``(m, n)``."""
    q = np.ascontiguousarray(queries, dtype=np.uint8).view(np.uint64)
    b = np.ascontiguousarray(bank, dtype=np.uint8).view(np.uint64)
    if len(q) == 0 or len(b) == 0:
        return np.zeros((len(q), len(b)), dtype=np.int32)
    counts: np.ndarray = np.bitwise_count(q[:, None, :] ^ b[None, :, :]).sum(axis=2, dtype=np.int32)
    return counts


# --------------------------------------------------------------------------- hashing


def _pdqhash() -> Any:
    return require("pdqhash", extra="match", purpose="PDQ hashes of video frames")


def hash_rgb(pixels: np.ndarray) -> FrameHash:
    """Hash one RGB uint8 image (timestamp 0); see :func:`hash_video` for videos."""
    return _hash_pixels(pixels, 0.0)


def _hash_pixels(pixels: np.ndarray, timestamp: float) -> FrameHash:
    pdq = _pdqhash()
    hashes, quality = pdq.compute_dihedral(np.ascontiguousarray(pixels, dtype=np.uint8))
    return FrameHash(
        timestamp=round(timestamp, 3),
        quality=int(quality),
        pdq=bits_to_hex(hashes[0]),
        mirror=bits_to_hex(hashes[_MIRROR]),
    )


def hash_image_file(path: str | Path, side: int = HASH_SIDE) -> FrameHash:
    """Hash an image file (e.g. a sampled prompt frame)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            if max(rgb.size) > side:
                rgb.thumbnail((side, side), Image.Resampling.BILINEAR)
            pixels = np.asarray(rgb)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the image to hash it ({exc})") from None
    return _hash_pixels(pixels, 0.0)


def dedupe(frames: Sequence[FrameHash], max_distance: int = DEDUPE_DISTANCE) -> list[FrameHash]:
    """Drop each frame within ``max_distance`` of the last kept one (a still shot is one hash)."""
    kept: list[FrameHash] = []
    for frame in frames:
        if kept and hamming(kept[-1].pdq, frame.pdq) <= max_distance:
            continue
        kept.append(frame)
    return kept


def hash_video(video: str | Path, config: HashConfig | None = None) -> VideoHashes:
    """PDQ-hash ``video`` at ``config.fps`` frames per second (key frames only for long videos).

    Frames are decoded in order with one thread, skipping the deblocking filter and non-reference
    frames (cheap, and a hash does not need them), and the first decoded frame at or after each
    tick is hashed.

    Raises:
        InputError: the file is missing or not a decodable video.
        MissingDependencyError: PyAV or pdqhash is not installed.
    """
    config = config or HashConfig()
    av = require("av", extra="video", purpose="decoding videos to hash them")
    video = Path(video)
    if not video.is_file() or video.stat().st_size == 0:
        raise InputError(f"{video}: no such video file, or it is empty")
    _pdqhash()
    picked: list[FrameHash] = []
    try:
        with av.open(str(video)) as container:
            if not container.streams.video:
                raise InputError(f"{video}: the file has no video stream")
            stream = container.streams.video[0]
            stream.thread_count = 1  # one core per video: the batch runner parallelises across videos
            ctx = stream.codec_context
            ctx.options = {"skip_loop_filter": "all", "flags2": "fast"}
            base, start = float(stream.time_base or 0), stream.start_time or 0
            duration = float(stream.duration * base) if stream.duration else None
            if duration is None and container.duration:
                duration = container.duration / 1_000_000
            keys_only = duration is not None and duration > config.full_decode_max_s
            ctx.skip_frame = "NONKEY" if keys_only else "NONREF"
            width, height = ctx.width, ctx.height
            scale = min(1.0, config.side / max(width, height)) if width and height else 1.0
            size = {"width": max(2, round(width * scale)), "height": max(2, round(height * scale))}
            step, tick = 1.0 / config.fps, 0.0
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                stamp = (frame.pts - start) * base
                if stamp + 1e-6 < tick and not keys_only:
                    continue
                pixels = frame.to_ndarray(format="rgb24", interpolation="AREA", **size)
                picked.append(_hash_pixels(pixels, stamp))
                while tick <= stamp + 1e-6:
                    tick += step
    except (InputError, MissingDependencyError):
        raise
    except Exception as exc:  # PyAV raises many error classes for broken files
        raise InputError(f"{video}: cannot decode frames to hash ({str(exc).strip()[:200]})") from None
    if not picked:
        raise InputError(f"{video}: no frame could be decoded to hash")
    picked.sort(key=lambda f: f.timestamp)
    return VideoHashes(fps=config.fps, duration=round(duration, 3) if duration else None, frames=tuple(dedupe(picked)))


__all__ = [
    "DEDUPE_DISTANCE",
    "HASH_BYTES",
    "MIN_QUALITY",
    "FrameHash",
    "HashConfig",
    "VideoHashes",
    "bits_to_hex",
    "dedupe",
    "distances",
    "hamming",
    "hash_image_file",
    "hash_rgb",
    "hash_video",
    "hex_to_bytes",
    "hexes_to_array",
]
