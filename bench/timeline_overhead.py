"""CPU cost of the time-faithful sampling checks per video: header probe (PyAV), every frame's
timestamp (decord's index) and the plan (kuaimod_open.ingest.timeline), without decoding a frame.

    nice python bench/timeline_overhead.py /tmp/benchvids/short_720p.mp4 --repeat 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from kuaimod_open.ingest.frames import _frame_times, _open_video, probe
from kuaimod_open.ingest.timeline import plan_frames


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    print("| video | frames | CPU ms per video (probe + timestamps + plan) |")
    print("|---|---|---|")
    for video in args.videos:
        reader = _open_video(video)
        total = len(reader)
        started = time.process_time()
        for _ in range(args.repeat):
            plan_frames(_frame_times(reader, total), probe(video), 8)
        per = (time.process_time() - started) / args.repeat
        print(f"| {video.name} | {total} | {per * 1000:.1f} |")


if __name__ == "__main__":
    main()
