"""Real video files for tests, written with PyAV (libx264 in an mp4), frame by frame with chosen timestamps.

Each frame's colour can encode something the test checks later (which video it came from, the
moment it shows), so a test can tell from the decoded pixels which frame it got.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 30),
    "blue": (30, 30, 220),
    "yellow": (230, 220, 30),
    "magenta": (220, 30, 220),
    "cyan": (30, 210, 220),
    "white": (240, 240, 240),
    "grey": (120, 120, 120),
}


def write_frames(
    path: Path,
    images: Sequence[np.ndarray],
    times: Sequence[float],
    *,
    time_base: Fraction = Fraction(1, 1000),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
) -> Path:
    """Write ``images`` (H x W x 3 uint8) shown at ``times`` (seconds): variable frame rate is allowed."""
    import av

    height, width = images[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as box:
        stream = box.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        stream.options = {"preset": "ultrafast", "bf": "0", **(options or {})}
        for image, t in zip(images, times, strict=True):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = round(t / time_base)
            frame.time_base = time_base
            for packet in stream.encode(frame):
                box.mux(packet)
        for packet in stream.encode():
            box.mux(packet)
    return path


def solid(colour: str, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """One frame of a single colour."""
    image = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    image[:, :] = COLOURS[colour]
    return image


def solid_video(path: Path, colour: str, frames: int = 10, fps: int = 10) -> Path:
    """A video of one colour (to tell from its frames which video a verdict was judged on)."""
    return write_frames(path, [solid(colour)] * frames, [i / fps for i in range(frames)])


def grey(level: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """A frame whose grey level encodes a number (0..255)."""
    return np.full((size[1], size[0], 3), level, dtype=np.uint8)


def mean_colour(image_path: Path) -> tuple[float, float, float]:
    """The mean RGB of an image file."""
    from PIL import Image

    with Image.open(image_path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    r, g, b = pixels.reshape(-1, 3).mean(axis=0)
    return float(r), float(g), float(b)


def nearest_colour(image_path: Path) -> str:
    """The name of the colour in COLOURS closest to the image's mean colour."""
    mean = np.array(mean_colour(image_path))
    return min(COLOURS, key=lambda name: float(np.abs(mean - np.array(COLOURS[name])).sum()))


def _box(data: bytearray, name: bytes, start: int = 0) -> int:
    """Offset of the payload (after the 4-byte type) of the first ``name`` box at or after ``start``."""
    at = data.find(name, start)
    assert at > 0, f"no {name!r} box"
    assert data[at + 4] == 0, f"{name!r} is a version-1 box; these helpers patch version 0 only"
    return at + 4


def _timescale(data: bytearray, name: bytes) -> int:
    at = _box(data, name)
    return int.from_bytes(data[at + 12 : at + 16], "big")


def patch_mp4(path: Path, *, claimed_s: float | None = None, edit_start_s: float | None = None) -> Path:
    """Rewrite an mp4's header fields in place (an mp4 written by :func:`write_frames`, one video track).

    ``claimed_s``: the duration the movie, track, media and edit-list headers claim.
    ``edit_start_s``: the media time the edit list starts the presentation at (frames before it get
    negative presentation times in readers that honour edit lists).
    """
    data = bytearray(path.read_bytes())
    movie, media = _timescale(data, b"mvhd"), _timescale(data, b"mdhd")
    if claimed_s is not None:
        at = _box(data, b"mvhd")
        data[at + 16 : at + 20] = round(claimed_s * movie).to_bytes(4, "big")
        at = _box(data, b"tkhd")
        data[at + 20 : at + 24] = round(claimed_s * movie).to_bytes(4, "big")
        at = _box(data, b"mdhd")
        data[at + 16 : at + 20] = round(claimed_s * media).to_bytes(4, "big")
        at = _box(data, b"elst")
        data[at + 8 : at + 12] = round(claimed_s * movie).to_bytes(4, "big")
    if edit_start_s is not None:
        at = _box(data, b"elst")
        data[at + 12 : at + 16] = round(edit_start_s * media).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path
