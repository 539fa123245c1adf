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
