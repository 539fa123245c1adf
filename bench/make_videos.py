"""Synthetic benchmark videos: a ~30 s and a 10 min 1280x720 H.264 clip (30 fps, 3 s GOP), with audio.

    python bench/make_videos.py bench/videos           # writes short_720p.mp4 and long_720p.mp4

Content is a moving gradient with a frame counter, so every frame differs (like real footage, unlike
a still) and the encoder cannot skip work. A 3 s GOP matches typical short-video platform transcodes.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

W, H, FPS, GOP = 1280, 720, 30, 90


def write(path: Path, seconds: int) -> None:
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([(xx * 255 // W), (yy * 255 // H), ((xx + yy) * 255 // (W + H))], axis=-1).astype(np.uint8)
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        vs = container.add_stream("libx264", rate=FPS, options={"preset": "veryfast", "crf": "26", "g": str(GOP)})
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        aus = container.add_stream("aac", rate=16000, layout="mono")
        for i in range(seconds * FPS):
            img = np.roll(base, shift=4 * i, axis=1)
            img[40:80, 40 : 40 + (i % 600)] = 255  # a growing bar: a visible change every frame
            img[rng.integers(0, H, 2000), rng.integers(0, W, 2000)] = 0  # a little noise, like film grain
            container.mux(vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(vs.encode())
        tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(16000 * seconds) / 16000)).astype(np.float32)
        for j in range(0, len(tone), 1024):
            frame = av.AudioFrame.from_ndarray(tone[None, j : j + 1024], format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 16000, j, Fraction(1, 16000)
            container.mux(aus.encode(frame))
        container.mux(aus.encode())


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/videos")
    out.mkdir(parents=True, exist_ok=True)
    for name, seconds in (("short_720p.mp4", 30), ("long_720p.mp4", 600)):
        if not (out / name).exists():
            write(out / name, seconds)
            print(f"wrote {out / name}")
