"""The review queue: verdicts that need a human, and videos users reported.

A sample is in the queue when its latest verdict went to review (escalated by the policy, low
confidence, unparsed, failed) and no human decision (reviewer decision or appeal outcome) is newer
than that verdict, or when users reported it after the last human decision. A new verdict (after a
policy change, say) puts a sample back in the queue; so do new reports.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from kuaimod_open.judge.flags import SHORT_TEXT, main_reason
from kuaimod_open.judge.policy import Decision, Policy, Severity
from kuaimod_open.judge.verdict import ParseStatus, Verdict
from kuaimod_open.loop.feedback import LABEL_KINDS, FeedbackKind
from kuaimod_open.loop.store import Store

SEVERITY_RANK = {Severity.NONE: 0, Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3, Severity.CRITICAL: 4}
HIGH_SEVERITY = frozenset({Severity.HIGH, Severity.CRITICAL})
NO_CATEGORY = "(no category)"
QUEUE_HEADERS = ["sample", "title", "decision", "category", "confidence", "severity", "reports", "why", "policy"]


class SortKey(StrEnum):
    """How the queue is ordered (most urgent first)."""

    UNCERTAINTY = "uncertainty"
    SEVERITY = "severity"
    REPORTS = "reports"
    OLDEST = "oldest"


@dataclass(frozen=True)
class QueueItem:
    """One sample awaiting review, with what makes it urgent."""

    sample_id: str
    verdict_id: int
    verdict: Verdict
    title: str
    severity: Severity | None
    uncertainty: float
    reports: int
    reasons: tuple[str, ...]

    @property
    def severity_rank(self) -> int:
        """Strictness rank of the severity (-1 when the verdict names no known category)."""
        return SEVERITY_RANK[self.severity] if self.severity is not None else -1

    @property
    def policy_version(self) -> str:
        """The policy version the verdict was made under."""
        return self.verdict.provenance.policy_version

    def row(self) -> list[Any]:
        """The item as a display row (see :data:`QUEUE_HEADERS`)."""
        v = self.verdict
        return [
            self.sample_id,
            self.title[:60],
            str(v.decision),
            v.category or NO_CATEGORY,
            "" if (c := shown_confidence(v)) is None else round(c, 2),
            str(self.severity) if self.severity else "?",
            self.reports,
            ", ".join(self.reasons),
            self.policy_version,
        ]


def _utc(value: Any) -> datetime | None:
    # SQLite hands back naive datetimes; everything this project writes is UTC.
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def shown_confidence(verdict: Verdict) -> float | None:
    """The best confidence a verdict carries: calibrated > the model's token probability > self-reported."""
    for value in (verdict.calibrated_confidence, verdict.token_confidence, verdict.confidence):
        if value is not None:
            return value
    return None


def uncertainty(verdict: Verdict) -> float:
    """How unsure the model was: 1.0 for no usable answer, else one minus its best confidence.

    A calibrated token confidence (``kuaimod moderate --confidence-calibration``) is a measured
    probability of being right, so it ranks the queue better than a number the model wrote.
    """
    if verdict.status in (ParseStatus.UNPARSED, ParseStatus.ERROR):
        return 1.0
    confidence = shown_confidence(verdict)
    if confidence is None:
        return 0.75  # a loose (flexible) answer without a stated confidence
    return round(1.0 - confidence, 4)


def severity_of(verdict: Verdict, policy: Policy) -> Severity | None:
    """The highest severity among the categories the verdict names (None when it names none we know)."""
    found = [policy.find(code) for code in (verdict.category, *verdict.other_categories) if code]
    known = [c.severity for c in found if c is not None]
    return max(known, key=lambda s: SEVERITY_RANK[s]) if known else None


def _reasons(verdict: Verdict, low_confidence: float, open_reports: int) -> list[str]:
    reasons = []
    if verdict.status in (ParseStatus.UNPARSED, ParseStatus.ERROR):
        reasons.append(str(verdict.status))
    elif verdict.decision is Decision.REVIEW:
        # Why a person must look, from the verdict's most important flag (kuaimod_open.judge.flags).
        reason = main_reason(verdict.flags)
        reasons.append(SHORT_TEXT[reason] if reason is not None else "needs review")
    confidence = shown_confidence(verdict)
    if confidence is not None and confidence < low_confidence and "low confidence" not in reasons:
        reasons.append("low confidence")
    if open_reports:
        reasons.append(f"reported x{open_reports}")
    return reasons


def _latest_verdict_rows(store: Store) -> list[dict[str, Any]]:
    sa, v, s = store.sa, store.table("verdicts"), store.table("samples")
    latest = sa.select(sa.func.max(v.c.id)).group_by(v.c.sample_id).scalar_subquery()
    query = (
        sa.select(v.c.id, v.c.sample_id, v.c.payload, v.c.created_at, s.c.title)
        .select_from(v.outerjoin(s, s.c.id == v.c.sample_id))
        .where(v.c.id.in_(latest))
    )
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def _feedback_times(store: Store) -> tuple[dict[str, datetime], dict[str, list[datetime]]]:
    """The last human decision per sample, and the times of every user report."""
    t = store.table("feedback")
    kinds = [*LABEL_KINDS, FeedbackKind.USER_REPORT.value]
    query = store.sa.select(t.c.sample_id, t.c.kind, t.c.created_at).where(t.c.kind.in_(kinds))
    human: dict[str, datetime] = {}
    reports: dict[str, list[datetime]] = defaultdict(list)
    with store.engine.connect() as conn:
        for sample_id, kind, created in conn.execute(query):
            when = _utc(created) or datetime.min.replace(tzinfo=UTC)
            if kind in LABEL_KINDS:
                human[sample_id] = max(when, human.get(sample_id, when))
            else:
                reports[sample_id].append(when)
    return human, reports


def review_queue(
    store: Store,
    policy: Policy,
    *,
    low_confidence: float = 0.6,
    category: str | None = None,
    policy_version: str | None = None,
    sort: SortKey | str = SortKey.UNCERTAINTY,
) -> list[QueueItem]:
    """The samples awaiting review, filtered and most urgent first.

    ``category`` keeps verdicts naming that code (first or further category; ``NO_CATEGORY`` keeps
    those naming none); ``policy_version`` keeps verdicts made under that version.
    """
    human, reports = _feedback_times(store)
    items = []
    for row in _latest_verdict_rows(store):
        verdict = Verdict.model_validate_json(row["payload"])
        made = _utc(row["created_at"]) or _utc(verdict.provenance.created_at)
        decided = human.get(row["sample_id"])
        open_reports = sum(1 for r in reports.get(row["sample_id"], []) if decided is None or r > decided)
        needs_review = (
            verdict.decision is Decision.REVIEW
            or verdict.status in (ParseStatus.UNPARSED, ParseStatus.ERROR)
            or (verdict.confidence is not None and verdict.confidence < low_confidence)
        )
        undecided = decided is None or (made is not None and decided < made)
        if not ((needs_review and undecided) or open_reports):
            continue
        if category and not _matches_category(verdict, category):
            continue
        if policy_version and verdict.provenance.policy_version != policy_version:
            continue
        items.append(
            QueueItem(
                sample_id=row["sample_id"],
                verdict_id=int(row["id"]),
                verdict=verdict,
                title=row["title"] or "",
                severity=severity_of(verdict, policy),
                uncertainty=uncertainty(verdict),
                reports=len(reports.get(row["sample_id"], [])),
                reasons=tuple(_reasons(verdict, low_confidence, open_reports)),
            )
        )
    return sorted(items, key=_sort_key(SortKey(sort)))


def _matches_category(verdict: Verdict, category: str) -> bool:
    if category == NO_CATEGORY:
        return verdict.category is None
    return verdict.category == category or category in verdict.other_categories


def _sort_key(sort: SortKey) -> Any:
    if sort is SortKey.SEVERITY:
        return lambda i: (-i.severity_rank, -i.uncertainty, -i.reports, i.verdict_id)
    if sort is SortKey.REPORTS:
        return lambda i: (-i.reports, -i.severity_rank, -i.uncertainty, i.verdict_id)
    if sort is SortKey.OLDEST:
        return lambda i: i.verdict_id
    return lambda i: (-i.uncertainty, -i.severity_rank, -i.reports, i.verdict_id)


def queue_filters(store: Store) -> tuple[list[str], list[str]]:
    """The categories and policy versions present among stored verdicts (for the filter menus)."""
    t = store.table("verdicts")
    with store.engine.connect() as conn:
        cats = sorted({r[0] for r in conn.execute(store.sa.select(t.c.category).distinct()) if r[0]})
        versions = sorted({r[0] for r in conn.execute(store.sa.select(t.c.policy_version).distinct()) if r[0]})
    return cats, versions
