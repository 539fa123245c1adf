"""Frame sampling throughput: decord vs PyAV vs OpenCV vs decoding every frame, 8 and 16 frames.

    taskset -c 0 python bench/frame_sampling.py bench/videos/short_720p.mp4 bench/videos/long_720p.mp4

Every method returns the same frames as RGB arrays: the first frame plus k evenly spread ones
(kuaimod_open.ingest.frames.frame_indices), with one decoder thread, so numbers are per core. "naive"
decodes every frame with PyAV and keeps the chosen ones. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kuaimod_open.ingest.frames import frame_indices


def n_frames(path: Path) -> int:
    import decord

    return len(decord.VideoReader(str(path), num_threads=1))


def by_decord(path: Path, idx: list[int]) -> list[np.ndarray]:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    return list(reader.get_batch(idx).asnumpy())


def by_pyav(path: Path, idx: list[int]) -> list[np.ndarray]:
    import av

    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        fps, base = float(stream.average_rate), stream.time_base
        for i in idx:
            target = int(i / fps / base) + (stream.start_time or 0)
            # Seek to the key frame at or before the target, then decode forward to it.
            container.seek(target, stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is not None and frame.pts >= target - 1:
                    out.append(frame.to_ndarray(format="rgb24"))
                    break
    return out


def by_opencv(path: Path, idx: list[int]) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    out = []
    for i in idx:
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, frame = cap.read()
        if ok:
            out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return out


def by_decord_keyframes(path: Path, idx: list[int]) -> list[np.ndarray]:
    """The key frame nearest to each target: no decoding forward from a key frame (frames move by <= GOP/2)."""
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    keys = np.asarray(reader.get_key_indices())
    near = [int(keys[np.abs(keys - i).argmin()]) for i in idx]
    unique = sorted(set(near))
    return list(reader.get_batch(unique).asnumpy())


def by_pyav_keyframes(path: Path, idx: list[int]) -> list[np.ndarray]:
    """Seek to each target and decode only the key frame at or before it (skip_frame=NONKEY)."""
    import av

    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        stream.codec_context.skip_frame = "NONKEY"
        fps, base = float(stream.average_rate), stream.time_base
        seen = set()
        for i in idx:
            container.seek(int(i / fps / base) + (stream.start_time or 0), stream=stream, backward=True)
            frame = next(container.decode(stream))
            if frame.pts not in seen:  # two targets in one GOP land on the same key frame
                seen.add(frame.pts)
                out.append(frame.to_ndarray(format="rgb24"))
    return out


def product(mode: str) -> Callable[[Path, list[int]], list[np.ndarray]]:
    """kuaimod's own sampler (decode + resize to 640 + JPEG), as ``kuaimod moderate --sampling MODE`` runs it."""

    def run(path: Path, idx: list[int]) -> list[np.ndarray]:
        import tempfile

        from kuaimod_open.ingest.frames import sample_frames

        with tempfile.TemporaryDirectory() as tmp:
            frames = sample_frames(path, tmp, len(idx) - 1, mode=mode)
        return [np.zeros(1)] * len(frames)

    return run


def naive(path: Path, idx: list[int]) -> list[np.ndarray]:
    import av

    wanted, out = set(idx), []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        for n, frame in enumerate(container.decode(stream)):
            if n in wanted:
                out.append(frame.to_ndarray(format="rgb24"))
            # no early exit: decode-everything is the baseline being measured
    return out


METHODS: dict[str, Callable[[Path, list[int]], list[np.ndarray]]] = {
    "decord": by_decord,
    "pyav-seek": by_pyav,
    "opencv-seek": by_opencv,
    "decord-keyframes": by_decord_keyframes,
    "pyav-keyframes": by_pyav_keyframes,
    "kuaimod --sampling uniform (decord+jpeg)": product("uniform"),
    "kuaimod --sampling keyframe (+jpeg)": product("keyframe"),
    "naive-pyav-all": naive,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--seconds", type=float, default=6.0, help="time budget per cell (at least one run)")
    parser.add_argument("--only", default="", help="run only the methods whose name contains this text")
    args = parser.parse_args()
    # Rates are per CPU-second (process time, one decoder thread): on a shared machine wall time
    # also counts other processes' turns on the core; both are printed.
    print("| video | k | method | frames | videos/s per core | frames/s per core | CPU s/video | wall s/video | runs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for video in args.videos:
        total = n_frames(video)
        naive_cost = (0.0, 0.0, 0, 0)
        for k in (8, 16):
            idx = frame_indices(total, k)
            for name, method in METHODS.items():
                if args.only not in name:
                    continue
                if name.startswith("naive") and k != 8:
                    # Decoding everything costs the same whatever k is: reuse the k=8 measurement.
                    per, wall, runs, got = naive_cost
                else:
                    if not name.startswith("naive"):
                        method(video, idx)  # warm-up: imports, file cache
                    runs, started, cpu0 = 0, time.perf_counter(), time.process_time()
                    while runs == 0 or time.perf_counter() - started < args.seconds:
                        got = len(method(video, idx))
                        assert 0 < got <= len(idx), (name, got, len(idx))
                        runs += 1
                    wall = (time.perf_counter() - started) / runs
                    per = (time.process_time() - cpu0) / runs
                    if name.startswith("naive"):
                        naive_cost = (per, wall, runs, got)
                print(
                    f"| {video.name} | {k} (+first) | {name} | {got} | {1 / per:.2f} | {got / per:.1f} "
                    f"| {per:.3f} | {wall:.3f} | {runs} |"
                )


if __name__ == "__main__":
    main()
