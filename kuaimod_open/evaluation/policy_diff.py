"""Policy CI: replay two policy versions on the same samples and show what an edit changes.

A policy edit is reviewed like a code change: which categories and fields changed, which samples
flip decision or category, and how the metrics move. The predictor is anything that turns samples
into verdicts under a policy — the VLM pipeline, or a cheap first-stage router for CI speed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from kuaimod_open.evaluation.metrics import EvalReport, evaluate
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.policy import Policy
from kuaimod_open.judge.verdict import Verdict

Predictor = Callable[[Sequence[Sample], Policy], list[Verdict]]


class FieldChange(BaseModel):
    """One changed field of one category (or of the policy itself, code ``*``)."""

    code: str
    field: str
    old: Any
    new: Any


class Flip(BaseModel):
    """A sample whose decision or category differs between the two policies."""

    sample_id: str
    gold: str | None
    old_decision: str
    new_decision: str
    old_category: str | None
    new_category: str | None


class PolicyDiff(BaseModel):
    """The result of replaying two policies."""

    old_version: str
    new_version: str
    old_digest: str
    new_digest: str
    added: list[str]
    removed: list[str]
    changes: list[FieldChange]
    n: int
    flips: list[Flip]
    metrics_old: dict[str, float] | None = None
    metrics_new: dict[str, float] | None = None

    @property
    def deltas(self) -> dict[str, float]:
        """The change (new minus old) of each headline metric."""
        if self.metrics_old is None or self.metrics_new is None:
            return {}
        return {k: self.metrics_new[k] - self.metrics_old[k] for k in self.metrics_old}


def structural_changes(old: Policy, new: Policy) -> tuple[list[str], list[str], list[FieldChange]]:
    """Categories added and removed, and every changed field (top-level fields under code ``*``)."""
    old_cats = {c.code: c.model_dump(mode="json") for c in old.categories}
    new_cats = {c.code: c.model_dump(mode="json") for c in new.categories}
    changes = []
    for key in ("version", "benign", "min_confidence", "guidance", "description", "name"):
        if getattr(old, key) != getattr(new, key):
            changes.append(FieldChange(code="*", field=key, old=getattr(old, key), new=getattr(new, key)))
    for code in old_cats.keys() & new_cats.keys():
        for key, value in old_cats[code].items():
            if new_cats[code][key] != value:
                changes.append(FieldChange(code=code, field=key, old=value, new=new_cats[code][key]))
    added = [c for c in new_cats if c not in old_cats]
    removed = [c for c in old_cats if c not in new_cats]
    return added, removed, sorted(changes, key=lambda c: (c.code, c.field))


def headline(report: EvalReport) -> dict[str, float]:
    """The numbers a policy reviewer looks at first."""
    return {
        "binary_accuracy": report.official_binary.accuracy,
        "violative_recall": report.official_binary.violative_recall,
        "benign_recall": report.official_binary.benign_recall,
        "category_accuracy": report.category_accuracy,
        "macro_f1": report.macro_f1,
        "review_share": report.review_share,
    }


def diff_policies(samples: Sequence[Sample], old: Policy, new: Policy, predict: Predictor) -> PolicyDiff:
    """Replay ``old`` and ``new`` on ``samples`` with ``predict``; metrics when every sample is labelled."""
    added, removed, changes = structural_changes(old, new)
    before = {v.sample_id: v for v in predict(samples, old)}
    after = {v.sample_id: v for v in predict(samples, new)}
    flips = []
    for sample in samples:
        a, b = before[sample.id], after[sample.id]
        if a.decision != b.decision or a.category != b.category:
            flips.append(
                Flip(
                    sample_id=sample.id,
                    gold=sample.label,
                    old_decision=str(a.decision),
                    new_decision=str(b.decision),
                    old_category=a.category,
                    new_category=b.category,
                )
            )
    metrics_old = metrics_new = None
    if samples and all(s.label is not None for s in samples):
        metrics_old = headline(evaluate(samples, list(before.values()), old))
        metrics_new = headline(evaluate(samples, list(after.values()), new))
    return PolicyDiff(
        old_version=old.version,
        new_version=new.version,
        old_digest=old.digest,
        new_digest=new.digest,
        added=added,
        removed=removed,
        changes=changes,
        n=len(samples),
        flips=flips,
        metrics_old=metrics_old,
        metrics_new=metrics_new,
    )


def render_diff(diff: PolicyDiff, max_flips: int = 50) -> str:
    """A readable summary for the terminal or a pull request."""
    lines = [f"policy {diff.old_version} ({diff.old_digest}) -> {diff.new_version} ({diff.new_digest})"]
    lines += [f"  + category {c}" for c in diff.added] + [f"  - category {c}" for c in diff.removed]
    for ch in diff.changes:
        old, new = (str(v)[:80] for v in (ch.old, ch.new))
        lines.append(f"  ~ {ch.code}.{ch.field}: {old} -> {new}")
    lines.append(f"{len(diff.flips)} of {diff.n} samples flip decision or category")
    for f in diff.flips[:max_flips]:
        lines.append(
            f"  {f.sample_id} (gold {f.gold}): {f.old_decision}/{f.old_category} -> {f.new_decision}/{f.new_category}"
        )
    if len(diff.flips) > max_flips:
        lines.append(f"  ... {len(diff.flips) - max_flips} more")
    if diff.metrics_old is not None and diff.metrics_new is not None:
        lines.append("metric                old     new     delta")
        for key, old_value in diff.metrics_old.items():
            new_value = diff.metrics_new[key]
            lines.append(f"  {key:<18} {old_value:.3f}   {new_value:.3f}   {new_value - old_value:+.3f}")
    return "\n".join(lines)
