"""Fast frame sampling from key frames only (``--sampling keyframe``).

Exact-frame sampling (decord, or seek-and-decode) must decode forward from the previous key frame
to reach each chosen frame: on a 720p clip with a 3 s GOP that is ~45 decoded frames per sampled
frame, about 1 CPU-second per video for 9 frames (see BENCHMARKS.md). Here the file is demuxed
once (cheap: no decoding), the key frame nearest each target time is chosen, and only those
packets are decoded, each on its own (a key frame needs no other frame). The deblocking filter is
skipped and frames are scaled straight to the output size in the pixel-format conversion.

The price: each frame is the key frame nearest the target, so it can be up to half a GOP away
(its real timestamp is recorded). A video with too few key frames to cover the targets (a short
clip that is one GOP) falls back to exact sampling, which is cheap there because it is short.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._lazy import require
from .errors import InputError, MissingDependencyError
from .ingest import Frame


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


def sample_keyframes(video: str | Path, out_dir: str | Path, k: int, *, max_side: int = 640) -> tuple[Frame, ...]:
    """Decode the key frames nearest the first frame and ``k`` evenly spread times; save them as JPEGs.

    When fewer than half of the ``k + 1`` targets get a distinct key frame, the video is sampled
    exactly instead (``ingest.sample_frames``), so sparse-GOP clips still get ``k + 1`` frames.

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
            base, start = float(stream.time_base or 0), stream.start_time or 0
            keys = [p for p in container.demux(stream) if p.is_keyframe and p.size and p.pts is not None]
            if not keys:
                raise InputError(f"{video}: no decodable key frames")
            times = np.array([(p.pts - start) * base for p in keys])
            duration = float(times[-1]) if len(times) > 1 else 0.0
            if stream.duration:
                duration = max(duration, float(stream.duration * base))
            width, height = ctx.width, ctx.height
            scale = min(1.0, max_side / max(width, height)) if width and height else 1.0
            size = {"width": max(2, round(width * scale)), "height": max(2, round(height * scale))}
            picks = nearest(times, target_times(duration, k))
            if 2 * len(picks) < k + 1:
                from .ingest import sample_frames

                return sample_frames(video, out_dir, k, max_side=max_side)
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            for i in picks:
                decoded = ctx.decode(keys[i]) + ctx.decode(None)  # send the packet, then drain
                ctx.flush_buffers()  # reuse the decoder for the next, independent key frame
                if not decoded:
                    continue
                pixels = decoded[0].to_ndarray(format="rgb24", **size)
                path = out / f"key_{i:06d}.jpg"
                Image.fromarray(pixels).save(path, format="JPEG", quality=90)
                frames.append(Frame(path=path, index=None, timestamp=round(float(times[i]), 3)))
    except (InputError, MissingDependencyError):
        raise
    except Exception as exc:  # PyAV raises many error classes for broken files
        raise InputError(f"{video}: cannot read key frames ({str(exc).strip()[:200]})") from None
    if not frames:
        raise InputError(f"{video}: no key frame could be decoded")
    return tuple(frames)
