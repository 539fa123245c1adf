"""Cross-validated benchmark of the first-stage router and the cascade (issue #4).

    .venv/bin/python eval/router_cv.py --data ../shared/data/kuaimod_dev.jsonl --out eval/router_cv.md

Everything is measured on held-out outer folds (stratified 5-fold). Inside each outer training
fold, ``train_router`` cross-fits its own calibration scores (inner 5-fold) and chooses every
threshold on them, so no threshold, calibrator or model ever sees the fold it is scored on.
Embeddings are cached on disk by content hash (``--cache-dir``), so a re-run skips them.

Sections: main CV table (mean ± std over folds), feature ablation, learning curve, cascade operating
curve, and train+score timing on 1,000 documents (cold and warm embedding cache).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kuaimod_open.core.calibration import recall_threshold  # noqa: E402
from kuaimod_open.core.embedding import E5Embedder  # noqa: E402
from kuaimod_open.first_stage.cascade import band_metrics  # noqa: E402
from kuaimod_open.first_stage.model import Features, extract_features  # noqa: E402
from kuaimod_open.first_stage.router import RouterConfig, choose_thresholds, labels_for, train_router  # noqa: E402
from kuaimod_open.ingest.benchmark import load_benchmark  # noqa: E402
from kuaimod_open.ingest.sample import Sample, read_jsonl  # noqa: E402
from kuaimod_open.judge.policy import default_policy_path, load_policy  # noqa: E402

DEFAULT = "tfidf + e5 + kNN (default)"
PAPER = [
    ("RoBERTa (paper, full 1,000)", 0.740, 0.792),
    ("GPT-4o (paper)", 0.762, 0.734),
    ("CN-CLIP (paper)", 0.785, 0.678),
    ("InternVL-7B-SFT (paper)", 0.823, 0.777),
    ("KuaiMod-7B (paper)", 0.924, 0.846),
]


def binary(p: np.ndarray, y: np.ndarray, t: float) -> dict[str, float]:
    pred = p >= t
    pos = y == 1
    tp, fp, fn, tn = (pred & pos).sum(), (pred & ~pos).sum(), (~pred & pos).sum(), (~pred & ~pos).sum()
    return {
        "acc": (tp + tn) / len(y),
        "vio_p": tp / max(1, tp + fp),
        "vio_r": tp / max(1, tp + fn),
        "ben_p": tn / max(1, tn + fn),
        "ben_r": tn / max(1, tn + fp),
    }


def auc(p: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def folds(y: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def run_cv(samples, policy, feats: Features, y, splits, config: RouterConfig, fraction: float = 1.0, seed: int = 0):
    """Per-fold results: test scores, labels, the router's thresholds and its inner OOF scores."""
    out = []
    rng = np.random.default_rng(seed)
    for train, test in splits:
        if fraction < 1.0:  # stratified subsample of the training fold (learning curve)
            keep = []
            for cls in (0, 1):
                idx = train[y[train] == cls]
                keep.extend(rng.choice(idx, max(config.inner_folds, round(fraction * len(idx))), replace=False))
            train = np.sort(np.asarray(keep))
        router = train_router([samples[i] for i in train], policy, config, features=feats.take(train))
        test_feats = feats.take(test)
        p = router.card.calibrator(router.heads.raw_score(test_feats))
        proba = router.heads.category_proba(test_feats)
        assert router.oof is not None
        out.append({"p": p, "y": y[test], "test": test, "router": router, "oof": router.oof, "proba": proba})
    return out


def ms(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def main_table(results, recall_target: float) -> list[str]:
    rows = []
    for name, res in results.items():
        at_half = [binary(r["p"], r["y"], 0.5) for r in res]
        t_rec = [recall_threshold(r["oof"][0], r["oof"][1], recall_target) for r in res]
        at_rec = [binary(r["p"], r["y"], t) for r, t in zip(res, t_rec, strict=True)]
        aucs = [auc(r["p"], r["y"]) for r in res]
        rows.append(
            f"| {name} | {ms(aucs)} | {ms([m['acc'] for m in at_half])} | {ms([m['vio_p'] for m in at_half])} "
            f"| {ms([m['vio_r'] for m in at_half])} | {ms([m['ben_r'] for m in at_half])} "
            f"| {ms([m['acc'] for m in at_rec])} | {ms([m['vio_r'] for m in at_rec])} |"
        )
    return rows


def category_accuracy(res, samples, policy) -> str:
    _, codes = labels_for(samples, policy)
    hits, viol_hits, viol_n = [], 0, 0
    for r in res:
        classes = r["router"].heads.classes
        pred = [classes[i] for i in np.argmax(r["proba"], axis=1)]
        gold = [codes[i] for i in r["test"]]
        hits.append(np.mean([a == b for a, b in zip(pred, gold, strict=True)]))
        keep = [i for i, c in enumerate(classes) if c != policy.benign]
        vtop = [classes[keep[j]] for j in np.argmax(r["proba"][:, keep], axis=1)]
        for g, v in zip(gold, vtop, strict=True):
            if g != policy.benign:
                viol_n += 1
                viol_hits += g == v
    share = viol_hits / max(1, viol_n)
    return f"{ms(hits)} (argmax over all categories); top violation category right on {share:.3f} of violative rows"


def cascade_curve(res, targets) -> list[str]:
    rows = []
    for missed, false_flag in targets:
        ms_rows = []
        for r in res:
            oof_p, oof_y = r["oof"]
            targets = r["router"].card.config.model_copy(update={"max_missed": missed, "max_false_flag": false_flag})
            t = choose_thresholds(oof_p, oof_y, targets)
            ms_rows.append(band_metrics(r["p"], r["y"], t.allow_below, t.flag_at))

        def col(key: str, found: list[dict[str, float]] = ms_rows) -> str:
            return ms([m[key] for m in found])

        rows.append(
            f"| ≤{missed:.1%} / ≤{false_flag:.1%} | {col('decided')} | {col('allowed')} | {col('flagged')} "
            f"| {col('violations_allowed')} | {col('benign_flagged')} | {col('allowed_violative_rate')} |"
        )
    return rows


def timing(samples: list[Sample], policy, n: int, threads: int, seed: int) -> tuple[list[str], list[float]]:
    """Train on n documents and score them, first with a cold embedding cache, then warm."""
    rng = random.Random(seed)
    docs = list(samples)
    while len(docs) < n:  # new, distinct documents of realistic length: fields recombined across rows
        a, b, c = rng.sample(samples, 3)
        docs.append(Sample(id=f"mix{len(docs)}", title=a.title, ocr=b.ocr, asr=c.asr, label=a.label))
    docs = docs[:n]
    lines, seconds = [], []
    with tempfile.TemporaryDirectory() as cache:
        for label in ("cold cache", "warm cache"):
            encoder = E5Embedder(cache, threads=threads)
            wall, cpu = time.perf_counter(), time.process_time()
            router = train_router(docs, policy, RouterConfig(embed_threads=threads), encoder=encoder)
            t_train = time.perf_counter() - wall
            router.encoder = encoder
            router.score(docs)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            load = os.getloadavg()[0]
            seconds.append(wall)
            lines.append(
                f"| {label} | {n} | {router.card.timing_s['features']:.1f} | {t_train:.1f} | {wall:.1f} | {cpu:.1f} "
                f"| {encoder.misses} | {load:.1f} |"
            )
    return lines, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kuaimod_dev.jsonl"))
    parser.add_argument("--out", default=str(REPO / "eval" / "router_cv.md"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--recall-target", type=float, default=0.85)
    parser.add_argument("--timing-docs", type=int, default=1000, help="0 skips the timing section")
    parser.add_argument("--skip-curve", action="store_true", help="skip the learning curve (slow)")
    parser.add_argument("--timing-only", action="store_true", help="re-measure only the timing section of --out")
    parser.add_argument("--write-split", default=None, help="write fold 1's train.jsonl/test.jsonl here and exit")
    args = parser.parse_args()
    if args.write_split:
        write_split(args.data, Path(args.write_split), args.folds, args.seed)
        return
    if args.timing_only:
        policy = load_policy(default_policy_path())
        samples = load_benchmark(args.data)
        section = timing_section(
            args, len(samples), timing(samples, policy, args.timing_docs, args.threads, args.seed)[0]
        )
        rewrite_timing(Path(args.out), section)
        print("\n".join(section))
        return

    started = time.perf_counter()
    policy = load_policy(default_policy_path())
    samples = load_benchmark(args.data)
    y, _ = labels_for(samples, policy)
    encoder = E5Embedder(threads=args.threads)
    t0 = time.perf_counter()
    feats = extract_features(samples, RouterConfig(), encoder)
    t_embed = time.perf_counter() - t0
    print(f"features for {len(samples)} rows in {t_embed:.1f}s ({encoder.misses} embedded)", flush=True)
    splits = folds(y, args.folds, args.seed)

    base = RouterConfig(embed_threads=args.threads)
    variants = {
        "tfidf (char 1-2, per field)": base.model_copy(update={"features": ["tfidf"]}),
        "e5 (multilingual-e5-small) logreg": base.model_copy(update={"features": ["e5"]}),
        "e5 kNN vote": base.model_copy(update={"features": ["knn"]}),
        "tfidf + e5": base.model_copy(update={"features": ["tfidf", "e5"]}),
        DEFAULT: base,
    }
    results = {}
    for name, config in variants.items():
        t = time.perf_counter()
        results[name] = run_cv(samples, policy, feats, y, splits, config, seed=args.seed)
        print(f"{name}: {time.perf_counter() - t:.0f}s", flush=True)
    default = results[DEFAULT]

    curve = []
    if not args.skip_curve:
        for fraction in (0.2, 0.4, 0.6, 0.8, 1.0):
            res = default if fraction == 1.0 else run_cv(samples, policy, feats, y, splits, base, fraction, args.seed)
            n_train = np.mean([r["router"].card.n_train for r in res])
            aucs = [auc(r["p"], r["y"]) for r in res]
            accs = [binary(r["p"], r["y"], 0.5)["acc"] for r in res]
            dec = [band_metrics(r["p"], r["y"], *thresholds(r))["decided"] for r in res]
            curve.append(f"| {fraction:.0%} | {n_train:.0f} | {ms(aucs)} | {ms(accs)} | {ms(dec)} |")
            print(f"learning curve {fraction}: done", flush=True)

    targets = [(0.01, 0.01), (0.02, 0.02), (0.02, 0.05), (0.02, 0.10), (0.05, 0.05), (0.05, 0.10), (0.10, 0.10)]
    time_rows, seconds = (
        timing(samples, policy, args.timing_docs, args.threads, args.seed) if args.timing_docs else ([], [])
    )

    n_pos = int(y.sum())
    md = [
        "# First-stage router: cross-validated results",
        "",
        f"Data: `{Path(args.data).name}`, {len(samples)} rows ({n_pos} violative, {len(y) - n_pos} benign), text only "
        f"(title, OCR, ASR; no frames, no comments). Stratified {args.folds}-fold CV, seed {args.seed}; mean ± std "
        "over the outer folds. Calibration (Platt) and every threshold are fitted on cross-fitted (inner 5-fold) "
        "scores of the outer training fold only.",
        "",
        "Command:",
        "",
        "```",
        "cd /work/main && .venv/bin/python eval/router_cv.py --data ../shared/data/kuaimod_dev.jsonl "
        "--out eval/router_cv.md",
        "# re-measure only the timing section when the shared machine is quiet:",
        ".venv/bin/python eval/router_cv.py --timing-only --out eval/router_cv.md",
        "```",
        "",
        *summary(default, args.recall_target, seconds, args.timing_docs),
        "",
        "## Binary (violative vs benign)",
        "",
        f"`@0.5`: the router's own decision (calibrated p ≥ 0.5). `@recall`: threshold chosen on the training "
        f"fold's cross-fitted scores to reach violative recall {args.recall_target:.2f}, "
        "then applied to the test fold.",
        "",
        "| model | AUC | acc @0.5 | viol. P @0.5 | viol. R @0.5 | benign R @0.5 | acc @recall | viol. R @recall |",
        "|---|---|---|---|---|---|---|---|",
        *main_table(results, args.recall_target),
        "",
        "Paper baselines (binary, full 1,000-row benchmark; accuracy / violative recall): "
        + "; ".join(f"{n} {a:.3f} / {r:.3f}" for n, a, r in PAPER)
        + ".",
        "",
        f"Multi-class head (default features): accuracy {category_accuracy(default, samples, policy)}.",
        "",
        "## Cascade operating curve (default features)",
        "",
        "Targets (violations auto-allowed / benign auto-flagged) are met on the training fold's cross-fitted "
        "scores; the columns are what happened on the held-out folds. `decided` = auto-allowed + auto-flagged "
        "share of all videos; the rest is escalated to the VLM (or to human review).",
        "",
        "| targets | decided | auto-allowed | auto-flagged | violations auto-allowed | benign auto-flagged "
        "| violative share of auto-allowed |",
        "|---|---|---|---|---|---|---|",
        *cascade_curve(default, targets),
    ]
    if curve:
        md += [
            "",
            "## Learning curve (default features)",
            "",
            "Stratified subsamples of each outer training fold; the test folds are unchanged. `decided` uses the "
            "default cascade targets (≤2% / ≤2%).",
            "",
            "| share of training fold | rows | AUC | acc @0.5 | cascade decided |",
            "|---|---|---|---|---|",
            *curve,
        ]
    if time_rows:
        md += timing_section(args, len(samples), time_rows)
    md += ["", f"Benchmark wall time: {time.perf_counter() - started:.0f}s.", ""]
    Path(args.out).write_text("\n".join(md), encoding="utf-8")
    print("\n".join(md))


def write_split(data: str, out: Path, k: int, seed: int) -> None:
    """The first outer fold as files, for `kuaimod train-router` / `kuaimod eval --router` by hand."""
    rows = [row for _, row in read_jsonl(data)]
    y = np.array([row.get("tag") != "正向" for row in rows], dtype=int)
    train, test = folds(y, k, seed)[0]
    out.mkdir(parents=True, exist_ok=True)
    for name, idx in (("train", train), ("test", test)):
        lines = [json.dumps(rows[i], ensure_ascii=False) + "\n" for i in idx]
        (out / f"{name}.jsonl").write_text("".join(lines), encoding="utf-8")
    print(f"wrote {out}/train.jsonl ({len(train)} rows) and {out}/test.jsonl ({len(test)} rows)")


def summary(res, recall_target: float, seconds: list[float], n_docs: int) -> list[str]:
    """The issue's targets next to what was reached (default features)."""
    half = [binary(r["p"], r["y"], 0.5) for r in res]
    t_rec = [recall_threshold(r["oof"][0], r["oof"][1], recall_target) for r in res]
    rec = [binary(r["p"], r["y"], t) for r, t in zip(res, t_rec, strict=True)]
    bands = [band_metrics(r["p"], r["y"], *thresholds(r)) for r in res]

    def mean(rows: list[dict[str, float]], key: str) -> float:
        return float(np.mean([m[key] for m in rows]))

    reached_binary = mean(half, "acc") >= 0.85 and mean(half, "vio_r") >= 0.85
    reached_cascade = mean(bands, "decided") >= 0.60 and mean(bands, "violations_allowed") <= 0.02
    return [
        "## Targets of issue #4 and what is reached",
        "",
        "| target | reached (default router, held-out folds) | met |",
        "|---|---|---|",
        f"| binary accuracy ≥ 0.85 and violative recall ≥ 0.85, text only | acc {mean(half, 'acc'):.3f} / recall "
        f"{mean(half, 'vio_r'):.3f} at p ≥ 0.5; acc {mean(rec, 'acc'):.3f} / recall {mean(rec, 'vio_r'):.3f} at the "
        f"recall-{recall_target:.2f} threshold | {'yes' if reached_binary else 'no'} |",
        f"| cascade: ≥ 60% decided by the router with ≤ 2% of violations auto-allowed | {mean(bands, 'decided'):.1%} "
        f"decided, {mean(bands, 'violations_allowed'):.1%} of violations auto-allowed, "
        f"{mean(bands, 'benign_flagged'):.1%} of benign auto-flagged (targets 2% / 2%) "
        f"| {'yes' if reached_cascade else 'no'} |",
        (
            f"| train + score 1,000 documents within a few minutes on 2 CPU cores | {n_docs} documents: "
            f"{seconds[0]:.0f} s with a cold embedding cache, {seconds[1]:.0f} s warm (timing table below) "
            f"| {'yes' if seconds[0] <= 300 else 'no'} |"
            if len(seconds) == 2
            else "| train + score 1,000 documents within a few minutes on 2 CPU cores | not measured | |"
        ),
        "",
        "Hyper-parameters (C of each logistic head, k = 10 and the temperature of the kNN vote, char 1-2-grams, "
        "the per-field character budgets of the embedded text) were picked in exploratory runs on these same 599 "
        "rows (the kNN and ensemble choices on a different fold seed), so the table carries a mild selection "
        "bias. Tried in those runs and not kept, all at or below the default: char 1-3-grams, one TF-IDF over "
        "the joined text (AUC 0.72-0.73), standardised embeddings, cosine similarity to the policy's category "
        "definitions as features (alone AUC 0.64), an RBF SVM on embeddings, a kNN vote over TF-IDF vectors.",
    ]


def timing_section(args: argparse.Namespace, n_rows: int, time_rows: list[str]) -> list[str]:
    return [
        "",
        "## Train + score timing",
        "",
        f"{args.timing_docs} documents (the {n_rows} rows plus rows whose title/OCR/ASR are recombined "
        f"from different rows, so every text is new), default features, {args.threads} embedding threads. "
        "Wall seconds; `cpu` is this process's CPU time summed over its threads. The machine is shared, so the "
        "1-minute load average at the end of each run is given (2 cores: a load above 2 means contention).",
        "",
        "| cache | docs | features (embedding) s | train total s | train + score s | cpu s | texts embedded | load |",
        "|---|---|---|---|---|---|---|---|",
        *time_rows,
    ]


def rewrite_timing(path: Path, section: list[str]) -> None:
    """Replace the timing section of an existing result file (re-measured on a quieter machine)."""
    text = path.read_text(encoding="utf-8")
    start = text.index("\n## Train + score timing")
    end = text.index("\nBenchmark wall time:")
    head = text[:start].rstrip("\n")
    path.write_text(head + "\n" + "\n".join(section) + "\n" + text[end:], encoding="utf-8")


def thresholds(r) -> tuple[float, float]:
    t = r["router"].card.thresholds
    return t.allow_below, t.flag_at


if __name__ == "__main__":
    main()
