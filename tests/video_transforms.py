"""Edited copies of real videos, as a re-uploader makes them: re-encode, scale, crop, borders, text, mirror,
trim, speed. Used by the hash bank tests and eval/hash_robustness.py; PyAV (libav/ffmpeg's libraries) does
the decoding and the H.264 encoding, PIL the picture edits."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont


@dataclass(frozen=True)
class Edit:
    """One re-upload edit; the defaults change nothing but the encoding (CRF 23)."""

    name: str
    crf: int = 23
    scale: float = 1.0
    crop: float = 0.0  # share of width and height cut away, centred
    border: float = 0.0  # letterbox: black bars adding this share of the height (top + bottom)
    text: str | None = None  # caption burned into the lower part, plus a corner watermark
    mirror: bool = False
    trim: float = 0.0  # seconds cut from the start
    speed: float = 1.0


EDITS = (
    Edit("reencode_crf35", crf=35),
    Edit("scale_0.5", scale=0.5),
    Edit("crop_5%", crop=0.05),
    Edit("crop_10%", crop=0.10),
    Edit("letterbox_20%", border=0.20),
    Edit("text_watermark", text="搬运 @someone 关注我"),
    Edit("mirror", mirror=True),
    Edit("trim_2s", trim=2.0),
    Edit("speed_1.1", speed=1.1),
)


def _even(n: float) -> int:
    return max(2, int(round(n / 2)) * 2)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    for path in (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    ):
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default()


def _edit_frame(pixels: np.ndarray, edit: Edit) -> Image.Image:
    image = Image.fromarray(pixels)
    w, h = image.size
    if edit.crop:
        dx, dy = int(w * edit.crop / 2), int(h * edit.crop / 2)
        image = image.crop((dx, dy, w - dx, h - dy))
    if edit.mirror:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if edit.text:
        draw = ImageDraw.Draw(image)
        iw, ih = image.size
        band = max(12, ih // 8)
        draw.rectangle((0, ih - band - 4, iw, ih - 4), fill=(0, 0, 0))
        draw.text(
            (8, ih - band - 2),
            edit.text.encode("ascii", "ignore").decode() or "reupload",
            fill=(255, 255, 0),
            font=_font(band - 4),
        )
        mark = max(10, ih // 10)
        draw.rectangle((iw - 4 * mark, 4, iw - 4, 4 + mark), fill=(255, 255, 255))
        draw.text((iw - 4 * mark + 4, 4), "LOGO", fill=(200, 0, 0), font=_font(mark - 2))
    if edit.border:
        iw, ih = image.size
        bar = int(ih * edit.border / 2)
        canvas = Image.new("RGB", (iw, ih + 2 * bar), (0, 0, 0))
        canvas.paste(image, (0, bar))
        image = canvas
    if edit.scale != 1.0:
        iw, ih = image.size
        image = image.resize((_even(iw * edit.scale), _even(ih * edit.scale)), Image.Resampling.BILINEAR)
    iw, ih = image.size
    if iw % 2 or ih % 2:
        image = image.resize((_even(iw), _even(ih)), Image.Resampling.BILINEAR)
    return image


def apply(src: Path, dst: Path, edit: Edit) -> Path:
    """Write ``src`` edited by ``edit`` to ``dst`` (H.264, yuv420p, no audio)."""
    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 25)
        frames = [(f.time, f.to_ndarray(format="rgb24")) for f in container.decode(stream) if f.time is not None]
    frames.sort(key=lambda x: x[0])
    frames = [(t - edit.trim, px) for t, px in frames if t >= edit.trim - 1e-6]
    if edit.speed != 1.0:
        # Play faster: output frame i shows the source frame at i * speed / rate.
        times = np.array([t for t, _ in frames])
        out_n = int(len(frames) / edit.speed)
        frames = [(i / rate, frames[int(np.abs(times - i * edit.speed / rate).argmin())][1]) for i in range(out_n)]
    dst.parent.mkdir(parents=True, exist_ok=True)
    fps = Fraction(rate).limit_denominator(1001)
    with av.open(str(dst), "w") as out:
        vs = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": str(edit.crf), "g": "60"})
        first = _edit_frame(frames[0][1], edit)
        vs.width, vs.height, vs.pix_fmt = first.size[0], first.size[1], "yuv420p"
        for _, pixels in frames:
            image = _edit_frame(pixels, edit)
            out.mux(vs.encode(av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")))
        out.mux(vs.encode())
    return dst


def synthetic(dst: Path, seed: int, seconds: float = 8.0, size: tuple[int, int] = (480, 270), fps: int = 25) -> Path:
    """A distinct generated video: moving textured shapes over a seeded background, with a scene cut halfway."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    scenes = []
    for _ in range(2):
        fx, fy, phase = rng.uniform(0.005, 0.04, 2).tolist() + [rng.uniform(0, 6.28)]
        colour = rng.uniform(40, 215, 3)
        background = (np.sin(xx * fx + phase)[..., None] * np.cos(yy * fy)[..., None] * 60 + colour).clip(0, 255)
        shapes = [
            (rng.uniform(0, w), rng.uniform(0, h), rng.uniform(15, 60), rng.uniform(-4, 4, 2), rng.integers(0, 255, 3))
            for _ in range(6)
        ]
        scenes.append((background.astype(np.uint8), shapes))
    dst.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * fps)
    with av.open(str(dst), "w") as out:
        vs = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "20", "g": "50"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            background, shapes = scenes[0 if i < n // 2 else 1]
            image = Image.fromarray(background.copy())
            draw = ImageDraw.Draw(image)
            for x, y, r, (vx, vy), colour in shapes:
                cx, cy = (x + vx * i) % w, (y + vy * i) % h
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(int(c) for c in colour))
            out.mux(vs.encode(av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")))
        out.mux(vs.encode())
    return dst
