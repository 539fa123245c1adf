"""Regenerate ``tests/data/promo_zh.mp4``: burned-in Chinese text plus synthetic English speech.

The committed clip lets the OCR/ASR tests run on machines without a CJK font or espeak-ng.
To rebuild it (needs PyAV, Pillow, a CJK font such as ``fonts-wqy-microhei`` and ``espeak-ng``)::

    python tests/data/make_fixture.py tests/data/promo_zh.mp4

Timeline (8 s, 640x360, 10 fps): 0-4 s "扫码加微信" / "限时福利"; 4-8 s "领取红包" / "日赚500元";
speech from 0.5 s: "Welcome to my channel. Scan the QR code to get free money every day."
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
SPEECH = "Welcome to my channel. Scan the QR code to get free money every day."
SCENES = [(0.0, 4.0, ("扫码加微信", "限时福利")), (4.0, 8.0, ("领取红包", "日赚500元"))]
W, H, FPS, SECONDS, RATE = 640, 360, 10, 8, 16000


def frame_at(t: float, font: ImageFont.FreeTypeFont) -> np.ndarray:
    image = Image.new("RGB", (W, H), (40, 60, 90))
    draw = ImageDraw.Draw(image)
    draw.ellipse((20 + 40 * t, 250, 80 + 40 * t, 310), fill=(200, 120, 40))  # something moving
    for start, end, lines in SCENES:
        if start <= t < end:
            for row, text in enumerate(lines):
                draw.text((60, 50 + 90 * row), text, font=font, fill=(255, 255, 255))
    return np.asarray(image)


def speech() -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), SPEECH], check=True)
        with wave.open(str(wav)) as handle:
            rate, raw = handle.getframerate(), handle.readframes(handle.getnframes())
    voice = np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32768
    voice = np.interp(np.arange(0, len(voice), rate / RATE), np.arange(len(voice)), voice)  # resample
    audio = np.zeros(RATE * SECONDS, dtype=np.float32)
    at = RATE // 2
    audio[at : at + len(voice)] = voice[: len(audio) - at]
    return audio


def main(out: str) -> None:
    font = ImageFont.truetype(FONT, 64)
    audio = speech()
    with av.open(out, "w") as container:
        vs = container.add_stream("libx264", rate=FPS, options={"crf": "30", "preset": "veryslow"})
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        aus = container.add_stream("aac", rate=RATE, layout="mono")
        aus.bit_rate = 24000
        for i in range(FPS * SECONDS):
            frame = av.VideoFrame.from_ndarray(frame_at(i / FPS, font), format="rgb24")
            container.mux(vs.encode(frame))
        container.mux(vs.encode())
        step = 1024
        for i in range(0, len(audio), step):
            chunk = audio[i : i + step]
            af = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
            af.sample_rate, af.pts, af.time_base = RATE, i, Fraction(1, RATE)
            container.mux(aus.encode(af))
        container.mux(aus.encode())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).with_name("promo_zh.mp4")))
