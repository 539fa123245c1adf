"""The evaluation gate: a candidate (policy, router, adapter) is promoted only if it is better.

Both the current and the candidate configuration are evaluated on the same golden set (held-out
human decisions from the feedback store plus labelled benchmark rows). The candidate passes only
if the target metric improves by at least ``min_improvement``, no violation category with enough
support loses more than ``category_tolerance`` recall (and at least ``min_lost`` samples), benign
recall (the complement of false flags) drops by at most ``benign_tolerance``, and the share of
verdicts sent to human review does not grow by more than ``max_review_increase``. With nothing to
compare against (the first router), the candidate must beat always predicting the majority class.
Every decision is stored with its numbers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from kuaimod_open.evaluation.metrics import EvalReport
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.policy import Policy
from kuaimod_open.loop.feedback import current_labels, stored_samples
from kuaimod_open.loop.store import Store

TARGETS = ("strict_accuracy", "official_accuracy", "violative_recall", "macro_f1", "category_accuracy")


class GateConfig(BaseModel):
    """Promotion rules."""

    target: str = Field(default="strict_accuracy", description=f"one of {', '.join(TARGETS)}")
    min_improvement: float = Field(default=0.0, ge=0.0, description="the candidate must beat the baseline by more")
    category_tolerance: float = Field(
        default=0.02, ge=0.0, description="largest allowed recall drop of any violation category"
    )
    benign_tolerance: float = Field(
        default=0.10,
        ge=0.0,
        description=(
            "largest allowed drop of benign recall (i.e. growth of false flags). Looser than the per-category "
            "rule on purpose: catching more violations usually costs a little benign recall, and the same 0.02 "
            "would entrench a baseline that rarely flags anything"
        ),
    )
    min_support: int = Field(default=3, ge=1, description="categories with fewer gold samples are not checked")
    min_lost: int = Field(
        default=2,
        ge=1,
        description=(
            "a category counts as regressed only if the candidate also misses at least this many more of its "
            "golden samples: on a golden set of a few hundred rows, one sample of a small category is noise"
        ),
    )
    max_review_increase: float = Field(default=0.05, ge=0.0)


class GateResult(BaseModel):
    """A stored gate decision."""

    kind: str
    candidate: str
    baseline: str
    passed: bool
    reasons: list[str]
    target: str
    baseline_metrics: dict[str, float]
    candidate_metrics: dict[str, float]
    category_recall_deltas: dict[str, float]
    n: int


def gate_metrics(report: EvalReport) -> dict[str, float]:
    """The numbers the gate compares."""
    return {
        "strict_accuracy": report.strict_binary.accuracy,
        "official_accuracy": report.official_binary.accuracy,
        "violative_recall": report.strict_binary.violative_recall,
        "macro_f1": report.macro_f1,
        "category_accuracy": report.category_accuracy,
        "review_share": report.review_share,
    }


def compare(
    kind: str,
    candidate: str,
    baseline: str,
    candidate_report: EvalReport,
    baseline_report: EvalReport | None,
    config: GateConfig | None = None,
) -> GateResult:
    """Decide whether ``candidate`` may replace ``baseline``.

    Without a baseline the candidate must answer and beat always predicting the majority class.
    """
    config = config or GateConfig()
    new = gate_metrics(candidate_report)
    reasons: list[str] = []
    deltas: dict[str, float] = {}
    if baseline_report is None:
        # Nothing to compare with (the first router, say): the candidate must at least answer and beat
        # the trivial predictor that always names the majority class, or a degenerate first model (all
        # "violative" from a handful of labels) would become the baseline every later candidate must beat.
        old: dict[str, float] = {}
        binary = candidate_report.strict_binary
        floor = binary.majority_accuracy
        passed = binary.answered > 0 and binary.accuracy > floor
        reasons.append(
            f"no baseline: strict_accuracy {binary.accuracy:.4f} vs majority-class {floor:.4f}"
            + ("" if binary.answered else "; no answers")
        )
    else:
        old = gate_metrics(baseline_report)
        gain = new[config.target] - old[config.target]
        passed = gain > config.min_improvement
        reasons.append(
            f"{config.target} {old[config.target]:.4f} -> {new[config.target]:.4f} ({gain:+.4f}; "
            f"needs > {config.min_improvement:+.4f})"
        )
        before = {c.code: c for c in baseline_report.categories}
        benign = candidate_report.benign
        for cat in candidate_report.categories:
            ref = before.get(cat.code)
            if ref is None or ref.support < config.min_support:
                continue
            deltas[cat.code] = cat.recall - ref.recall
            tolerance = config.benign_tolerance if cat.code == benign else config.category_tolerance
            lost = round(-deltas[cat.code] * ref.support)
            if deltas[cat.code] < -tolerance and lost >= config.min_lost:
                passed = False
                what = "benign recall (more false flags)" if cat.code == benign else f"{cat.code} recall"
                reasons.append(f"{what} regressed {ref.recall:.3f} -> {cat.recall:.3f} (tolerance {tolerance:.2f})")
        review_gain = new["review_share"] - old["review_share"]
        if review_gain > config.max_review_increase:
            passed = False
            reasons.append(f"review share grew {old['review_share']:.1%} -> {new['review_share']:.1%}")
    return GateResult(
        kind=kind,
        candidate=candidate,
        baseline=baseline,
        passed=passed,
        reasons=reasons,
        target=config.target,
        baseline_metrics=old,
        candidate_metrics=new,
        category_recall_deltas=deltas,
        n=candidate_report.n,
    )


def record(store: Store, result: GateResult) -> int:
    """Store a gate decision with its numbers."""
    t = store.table("gate_decisions")
    with store.begin() as conn:
        row = conn.execute(
            t.insert().values(
                kind=result.kind,
                candidate=result.candidate,
                baseline=result.baseline,
                passed=result.passed,
                details=result.model_dump_json(),
                created_at=datetime.now(UTC),
            )
        )
    return int(row.inserted_primary_key[0])


def decisions(store: Store, kind: str | None = None) -> list[GateResult]:
    """Stored gate decisions, oldest first."""
    t = store.table("gate_decisions")
    query = store.sa.select(t.c.details).order_by(t.c.id)
    if kind is not None:
        query = query.where(t.c.kind == kind)
    with store.engine.connect() as conn:
        return [GateResult.model_validate(json.loads(r[0])) for r in conn.execute(query)]


# --------------------------------------------------------------------------- golden set


def is_holdout(sample_id: str, fraction: float = 0.2) -> bool:
    """Deterministic split of human-decided samples: held out for the gate, or used for training."""
    bucket = int(hashlib.sha256(sample_id.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < fraction


def labelled_feedback_samples(store: Store, policy: Policy) -> list[Sample]:
    """Stored samples with their current human label (as a tag) from reviewer decisions and appeals."""
    labels = current_labels(store)
    samples = stored_samples(store, labels)
    out = []
    for sid, event in labels.items():
        cat = policy.find(event.category or "")
        if sid in samples and cat is not None:
            out.append(samples[sid].model_copy(update={"label": cat.tag}))
    return out


def golden_set(store: Store, policy: Policy, benchmark: Sequence[Sample] = (), *, holdout: float = 0.2) -> list[Sample]:
    """Held-out human decisions plus labelled benchmark rows (feedback wins on id clashes)."""
    held = [s for s in labelled_feedback_samples(store, policy) if is_holdout(s.id, holdout)]
    ids = {s.id for s in held}
    return held + [s for s in benchmark if s.label is not None and s.id not in ids]


def training_set(store: Store, policy: Policy, *, holdout: float = 0.2) -> list[Sample]:
    """Human-decided samples not held out for the gate."""
    return [s for s in labelled_feedback_samples(store, policy) if not is_holdout(s.id, holdout)]


def summary(result: GateResult) -> dict[str, Any]:
    """A compact form for logs and CLI output."""
    return {
        "candidate": result.candidate,
        "baseline": result.baseline,
        "passed": result.passed,
        "reasons": result.reasons,
    }
