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
from kuaimod_open.ingest.keys import plain_reason
from kuaimod_open.ingest.sample import Frame
from kuaimod_open.ingest.timeline import PRESENTED_FROM_S, Claims, check_size, check_timeline, nearest, target_times

# Past this length, seeking to each target beats demuxing the whole file (which costs ~0.1 s per
# 10 min of 720p video just to read the packets).
SEEK_AFTER_S = 90.0


def _by_scanning(container: Any, stream: Any, k: int, claims: Claims) -> list[tuple[float, Any]] | None:
    """Demux once, decode only the key packets nearest the targets, each on its own.

    The whole timeline is checked first (:func:`kuaimod_open.ingest.timeline.check_timeline`):
    None when it cannot be trusted. Key frames an edit list cuts (negative times) are never picked.
    """
    base, start = float(stream.time_base or 0), stream.start_time or 0
    packets = [p for p in container.demux(stream) if p.size and p.pts is not None]
    if not packets or not base:
        return None
    shown, _ = check_timeline(np.sort(np.array([(p.pts - start) * base for p in packets], dtype=np.float64)), claims)
    if shown is None:
        return None
    end = float(np.nanmax(shown))
    keys = [p for p in packets if p.is_keyframe and (p.pts - start) * base >= PRESENTED_FROM_S]
    times = np.array([max(0.0, (p.pts - start) * base) for p in keys])
    presented = shown[~np.isnan(shown)]
    step = float(np.median(np.diff(presented))) if len(presented) > 1 else 0.0
    ctx, picked = stream.codec_context, []
    for i in nearest(times, target_times(end + step, k)):
        decoded = ctx.decode(keys[i]) + ctx.decode(None)  # send the packet, then drain
        ctx.flush_buffers()  # reuse the decoder for the next, independent key frame
        if decoded:
            picked.append((float(times[i]), decoded[0]))
    return picked


def _by_seeking(container: Any, stream: Any, duration: float, k: int, claims: Claims) -> list[tuple[float, Any]] | None:
    """Seek to each target and decode the key frame at or before it; the decoder skips all others.

    ``duration`` is what the headers claim; a header that lies about it leaves too few distinct key
    frames (the caller then samples exactly). A frame before the presentation starts, or far past
    every claimed duration, makes the timeline untrustworthy: None.
    """
    base, start = float(stream.time_base or 0), stream.start_time or 0
    if not base:
        return None
    stream.codec_context.skip_frame = "NONKEY"
    seen: dict[int, Any] = {}
    for target in target_times(duration, k):
        container.seek(start + int(target / base), stream=stream, backward=True)
        frame = next(iter(container.decode(stream)), None)
        if frame is not None and frame.pts is not None:
            seen.setdefault(frame.pts, frame)
    stamps = sorted(seen)
    times = np.array([(pts - start) * base for pts in stamps], dtype=np.float64)
    if not stamps or check_timeline(times, claims)[0] is None or times[0] < PRESENTED_FROM_S:
        return None
    return [(max(0.0, float(t)), seen[pts]) for t, pts in zip(times, stamps, strict=True)]


def sample_keyframes(
    video: str | Path, out_dir: str | Path, k: int, *, max_side: int = 640
) -> tuple[Frame, ...] | None:
    """Decode the key frames nearest the first frame and ``k`` evenly spread times; save them as JPEGs.

    Returns None when fewer than half of the ``k + 1`` targets get a distinct key frame, or when the
    file's timeline cannot be trusted (:mod:`kuaimod_open.ingest.timeline`): the caller
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
            check_size(video, stream.codec_context.width, stream.codec_context.height)
            stream.thread_count = 1  # one core per video: the batch runner parallelises across videos
            ctx = stream.codec_context
            # Thumbnails for a VLM do not need the deblocking filter; skipping it saves ~15% per frame.
            ctx.options = {"skip_loop_filter": "all", "flags2": "fast"}
            base = float(stream.time_base or 0)
            claims = Claims(
                container_s=float(container.duration) / 1e6 if container.duration else None,
                stream_s=float(stream.duration * base) if stream.duration else None,
            )
            duration = claims.stream_s or 0.0
            if duration > SEEK_AFTER_S:
                picked = _by_seeking(container, stream, duration, k, claims)
            else:
                picked = _by_scanning(container, stream, k, claims)
            if picked is None:
                return None  # the timeline cannot be trusted: exact sampling decides what to record
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
        raise InputError(f"{video}: cannot read key frames ({plain_reason(exc)})") from None
    if not frames:
        raise InputError(f"{video}: no key frame could be decoded")
    return tuple(frames)
