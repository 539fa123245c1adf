"""CPU overhead per video, excluding the VLM: decode + OCR + ASR + prompt + parse, and peak memory.

    taskset -c 0 python bench/overhead.py VIDEO...      # one core; prints a Markdown table

Per video: sample 8 frames (+ the first) with decord and save them as JPEGs, OCR them (RapidOCR),
transcribe the audio (faster-whisper, Whisper base int8, language zh, VAD on), build the prompt, and
parse a realistic model answer into a verdict. Times are CPU seconds of this process (one thread
per model), warm (models loaded by a first untimed video). The extraction cache is disabled.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import verdict_json  # noqa: E402

from kuaimod_open.ingest import extract  # noqa: E402
from kuaimod_open.ingest.frames import sample_frames  # noqa: E402
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.pipeline import provenance_for  # noqa: E402
from kuaimod_open.judge.policy import default_policy_path, load_policy  # noqa: E402
from kuaimod_open.judge.prompt import build_messages, load_template  # noqa: E402
from kuaimod_open.judge.verdict import parse_verdict  # noqa: E402

STAGES = ("decode", "ocr", "asr", "prompt", "parse")
SAMPLING = "uniform"


def one(video: Path, work: Path, policy, template) -> dict[str, float]:  # noqa: ANN001
    cpu: dict[str, float] = {}

    def timed(stage: str, fn):  # noqa: ANN001, ANN202
        t0 = time.process_time()
        result = fn()
        cpu[stage] = time.process_time() - t0
        return result

    frames = timed("decode", lambda: sample_frames(video, work / video.stem, 8, mode=SAMPLING))
    ocr = timed("ocr", lambda: extract.render(extract.ocr_frames(frames)))
    asr = timed("asr", lambda: extract.render(extract.transcribe(video, language="zh")))
    sample = Sample(id=video.stem, video=video, frames=frames, title="今天的视频", ocr=ocr, asr=asr)
    timed("prompt", lambda: build_messages(sample, policy, template))

    class _Backend:
        model_id, adapter = "bench", None

    prov = provenance_for(
        sample, policy, template, _Backend(), __import__("kuaimod_open.judge.pipeline").pipeline.ModerationConfig()
    )  # type: ignore[arg-type]
    answer = verdict_json(
        "PRIVATE_DEAL", evidence={"frames": [2], "text": [{"field": "ocr", "quote": ocr[6:12] or "x"}]}
    )
    timed("parse", lambda: parse_verdict(answer, policy, sample, prov))
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sampling", default="uniform", choices=["uniform", "keyframe"])
    args = parser.parse_args()
    global SAMPLING
    SAMPLING = args.sampling
    policy, template = load_policy(default_policy_path()), load_template()
    with tempfile.TemporaryDirectory() as tmp:
        one(args.videos[0], Path(tmp) / "warm", policy, template)  # load the models
        print(f"CPU ms per video (--sampling {SAMPLING})\n")
        print("| video | decode | OCR | ASR | prompt | parse | total | total excl. OCR/ASR |")
        print("|---|---|---|---|---|---|---|---|")
        for video in args.videos:
            runs = [one(video, Path(tmp) / f"r{i}", policy, template) for i in range(args.repeat)]
            best = {s: min(r[s] for r in runs) for s in STAGES}
            total = sum(best.values())
            cells = " | ".join(f"{1000 * best[s]:.1f}" for s in STAGES)
            print(f"| {video.name} | {cells} | {1000 * total:.0f} | {1000 * (total - best['ocr'] - best['asr']):.1f} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nbest of {args.repeat}, one thread per model; peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
