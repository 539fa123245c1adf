"""Fast frame sampling from key frames only (``--sampling keyframe``).

Exact-frame sampling (decord, or seek-and-decode) must decode forward from the previous key frame
to reach each chosen frame: on a 720p clip with a 3 s GOP that is ~45 decoded frames per sampled
frame, about 1 CPU-second per video for 9 frames (see BENCHMARKS.md). Here a short video is
demuxed once (cheap: no decoding), the key frame nearest each target time is chosen, and only
those packets are decoded, each on its own (a key frame needs no other frame); a long video is
sought to each target instead, and only the key frame there is decoded. The deblocking filter is
skipped and frames are scaled straight to the output size in the pixel-format conversion.

The price: each frame is a key frame near the target, so it can be up to a GOP away
(its real timestamp is recorded). A video with too few key frames to cover the targets (a short
clip that is one GOP) falls back to exact sampling, which is cheap there because it is short.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kuaimod_open._lazy import require
from kuaimod_open.errors import InputError, MissingDependencyError
from kuaimod_open.ingest.sample import Frame


def target_times(duration: float, k: int) -> list[float]:
    """The first instant plus the centres of ``k`` equal segments (the times ``frame_indices`` picks)."""
    if duration <= 0 or k <= 0:
        return [0.0]
    return [0.0] + [(i + 0.5) * duration / k for i in range(k)]


def nearest(times: np.ndarray, targets: list[float]) -> list[int]:
    """Indices into ``times`` of the entries nearest each target, de-duplicated, in time order."""
    if len(times) == 0:
        return []
    return sorted({int(np.abs(times - t).argmin()) for t in targets})


# Past this length, seeking to each target beats demuxing the whole file (which costs ~0.1 s per
# 10 min of 720p video just to read the packets).
SEEK_AFTER_S = 90.0


def _by_scanning(container: Any, stream: Any, duration: float, k: int) -> list[tuple[float, Any]]:
    """Demux once, decode only the key packets nearest the targets, each on its own."""
    base, start = float(stream.time_base or 0), stream.start_time or 0
    keys = [p for p in container.demux(stream) if p.is_keyframe and p.size and p.pts is not None]
    times = np.array([(p.pts - start) * base for p in keys])
    if len(times) > 1:
        duration = max(duration, float(times[-1]))
    ctx, picked = stream.codec_context, []
    for i in nearest(times, target_times(duration, k)):
        decoded = ctx.decode(keys[i]) + ctx.decode(None)  # send the packet, then drain
        ctx.flush_buffers()  # reuse the decoder for the next, independent key frame
        if decoded:
            picked.append((float(times[i]), decoded[0]))
    return picked


def _by_seeking(container: Any, stream: Any, duration: float, k: int) -> list[tuple[float, Any]]:
    """Seek to each target and decode the key frame at or before it; the decoder skips all others."""
    base, start = float(stream.time_base or 0), stream.start_time or 0
    stream.codec_context.skip_frame = "NONKEY"
    seen: dict[int, Any] = {}
    for target in target_times(duration, k):
        container.seek(start + int(target / base), stream=stream, backward=True)
        frame = next(iter(container.decode(stream)), None)
        if frame is not None and frame.pts is not None:
            seen.setdefault(frame.pts, frame)
    return [((pts - start) * base, frame) for pts, frame in sorted(seen.items())]


def sample_keyframes(
    video: str | Path, out_dir: str | Path, k: int, *, max_side: int = 640
) -> tuple[Frame, ...] | None:
    """Decode the key frames nearest the first frame and ``k`` evenly spread times; save them as JPEGs.

    Returns None when fewer than half of the ``k + 1`` targets get a distinct key frame: the caller
    (:func:`kuaimod_open.ingest.frames.sample_frames`) then samples the video exactly.

    Raises:
        InputError: the file is missing or not a decodable video.
        MissingDependencyError: PyAV is not installed.
    """
    av = require("av", extra="video", purpose="key-frame sampling")
    from PIL import Image

    video = Path(video)
    if not video.is_file() or video.stat().st_size == 0:
        raise InputError(f"{video}: no such video file, or it is empty")
    frames: list[Frame] = []
    try:
        with av.open(str(video)) as container:
            if not container.streams.video:
                raise InputError(f"{video}: the file has no video stream")
            stream = container.streams.video[0]
            stream.thread_count = 1  # one core per video: the batch runner parallelises across videos
            ctx = stream.codec_context
            # Thumbnails for a VLM do not need the deblocking filter; skipping it saves ~15% per frame.
            ctx.options = {"skip_loop_filter": "all", "flags2": "fast"}
            base = float(stream.time_base or 0)
            duration = float(stream.duration * base) if stream.duration else 0.0
            if duration > SEEK_AFTER_S:
                picked = _by_seeking(container, stream, duration, k)
            else:
                picked = _by_scanning(container, stream, duration, k)
            if 2 * len(picked) < k + 1:
                return None
            width, height = ctx.width, ctx.height
            scale = min(1.0, max_side / max(width, height)) if width and height else 1.0
            size = {"width": max(2, round(width * scale)), "height": max(2, round(height * scale))}
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            for stamp, frame in picked:
                pixels = frame.to_ndarray(format="rgb24", interpolation="AREA", **size)
                path = out / f"key_{round(stamp * 1000):09d}.jpg"
                Image.fromarray(pixels).save(path, format="JPEG", quality=90)
                frames.append(Frame(path=path, index=None, timestamp=round(stamp, 3)))
    except (InputError, MissingDependencyError):
        raise
    except Exception as exc:  # PyAV raises many error classes for broken files
        raise InputError(f"{video}: cannot read key frames ({str(exc).strip()[:200]})") from None
    if not frames:
        raise InputError(f"{video}: no key frame could be decoded")
    return tuple(frames)
