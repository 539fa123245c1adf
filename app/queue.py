"""The review app's view of the queue: a thin adapter over :mod:`kuaimod_open.loop.queue`.

The queue itself (what is pending, the order, pages, totals, claims) is an indexed query in the
library; see that module for the rule. This adapter only parses the verdicts of the rows it returns,
for the app's item panel. Prefer :func:`kuaimod_open.loop.queue.queue_page` (50 rows and a total)
over :func:`review_queue` without ``limit``, which walks every page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kuaimod_open.judge.policy import Policy, Severity
from kuaimod_open.judge.verdict import Verdict
from kuaimod_open.loop.queue import (
    NO_CATEGORY,
    QUEUE_HEADERS,
    SEVERITY_RANK,
    QueueFilters,
    QueueRow,
    SortKey,
    low_confidence,
    queue_filters,
    queue_page,
    set_low_confidence,
    severity_of,
    shown_confidence,
    uncertainty,
)
from kuaimod_open.loop.store import Store

__all__ = [
    "HIGH_SEVERITY",
    "NO_CATEGORY",
    "QUEUE_HEADERS",
    "SEVERITY_RANK",
    "QueueItem",
    "SortKey",
    "queue_filters",
    "review_queue",
    "severity_of",
    "shown_confidence",
    "uncertainty",
]

HIGH_SEVERITY = frozenset({Severity.HIGH, Severity.CRITICAL})


@dataclass(frozen=True)
class QueueItem:
    """One sample awaiting review, with its verdict parsed (only for the rows the app shows)."""

    sample_id: str
    verdict_id: int
    verdict: Verdict
    title: str
    severity: Severity | None
    uncertainty: float
    reports: int
    reasons: tuple[str, ...]
    listed: QueueRow

    @property
    def severity_rank(self) -> int:
        """Strictness rank of the severity (-1 when the verdict names no known category)."""
        return self.listed.severity_rank

    @property
    def policy_version(self) -> str:
        """The policy version the verdict was made under."""
        return self.listed.policy_version

    def row(self) -> list[Any]:
        """The item as a display row (see :data:`QUEUE_HEADERS`)."""
        return self.listed.row()


def _items(store: Store, rows: list[QueueRow]) -> list[QueueItem]:
    t = store.table("verdicts")
    wanted = [r.verdict_id for r in rows]
    payloads: dict[int, str] = {}
    with store.engine.connect() as conn:
        for start in range(0, len(wanted), 1000):
            chunk = wanted[start : start + 1000]
            payloads.update(conn.execute(store.sa.select(t.c.id, t.c.payload).where(t.c.id.in_(chunk))).all())
    return [
        QueueItem(
            sample_id=r.sample_id,
            verdict_id=r.verdict_id,
            verdict=Verdict.model_validate_json(payloads[r.verdict_id]),
            title=r.title,
            severity=r.severity,
            uncertainty=r.uncertainty,
            reports=r.reports,
            reasons=r.reasons,
            listed=r,
        )
        for r in rows
    ]


def review_queue(
    store: Store,
    policy: Policy | None = None,
    *,
    low_confidence: float | None = None,
    category: str | None = None,
    policy_version: str | None = None,
    sort: SortKey | str = SortKey.UNCERTAINTY,
    limit: int | None = None,
) -> list[QueueItem]:
    """The samples awaiting review, filtered and most urgent first (at most ``limit``; None: all).

    Severities are ranked with the store's active policy when the verdict was written (``policy`` is
    kept for callers of the old signature). ``low_confidence``, when it differs from the store's
    threshold, changes the store's threshold (one UPDATE, shared by every app instance).
    """
    if low_confidence is not None and low_confidence != _store_low(store):
        set_low_confidence(store, low_confidence)
    filters = QueueFilters(category=category or None, policy_version=policy_version or None)
    rows: list[QueueRow] = []
    cursor = None
    while limit is None or len(rows) < limit:
        size = 500 if limit is None else min(500, limit - len(rows))
        page = queue_page(store, filters=filters, sort=sort, cursor=cursor, limit=size, with_total=False)
        rows.extend(page.rows)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return _items(store, rows)


def _store_low(store: Store) -> float:
    return low_confidence(store)
