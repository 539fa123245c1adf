"""The one seam between the app and the review-queue query: pages of rows, a total, claims.

The app asks only for a page (``limit`` rows after an opaque cursor), the total behind the filters,
and claims on items; how the queue is computed stays behind these functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kuaimod_open.judge.flags import REVIEW_TEXT, main_reason
from kuaimod_open.judge.policy import Policy
from kuaimod_open.loop.store import Store

from .queue import NO_CATEGORY, QueueItem, SortKey, review_queue, shown_confidence


@dataclass(frozen=True)
class QueueFilters:
    """What the reviewer filters and sorts by ('' means no filter)."""

    sort: str = SortKey.UNCERTAINTY.value
    category: str = ""
    version: str = ""
    search: str = ""  # a sample id, or the start of one

    @classmethod
    def of(cls, sort: str | None, category: str | None, version: str | None, search: str | None) -> QueueFilters:
        """Filters from the UI's controls ('all' and blanks mean no filter)."""

        def clean(value: str | None) -> str:
            return "" if value in (None, "all") else str(value).strip()

        return cls(sort=clean(sort) or SortKey.UNCERTAINTY.value, category=clean(category), version=clean(version),
                   search=clean(search))  # fmt: skip


@dataclass(frozen=True)
class QueueRow:
    """One queued item as the queue table shows it."""

    sample_id: str
    verdict_id: int
    title: str
    decision: str
    category: str
    confidence: float | None
    severity: str
    reports: int
    why: str  # short labels for the cell
    why_long: str  # the full explanation (tooltip)
    policy_version: str
    claimed_by: str | None = None
    claimed_until: datetime | None = None


@dataclass(frozen=True)
class QueuePage:
    """A page of the queue: its rows, the total behind the filters, and cursors to the neighbours."""

    rows: list[QueueRow]
    total: int
    offset: int  # how many queued items come before this page's first row
    cursor: str | None = None  # the cursor that produced this page
    next_cursor: str | None = None
    prev_cursor: str | None = None

    @property
    def ids(self) -> list[str]:
        """The page's sample ids, in order."""
        return [r.sample_id for r in self.rows]


def _row(item: QueueItem) -> QueueRow:
    v = item.verdict
    main = main_reason(v.flags)
    long = [REVIEW_TEXT[main]] if main is not None else []
    if item.reports:
        long.append(f"reported by users {item.reports}x")
    return QueueRow(
        sample_id=item.sample_id,
        verdict_id=item.verdict_id,
        title=item.title,
        decision=str(v.decision),
        category=v.category or NO_CATEGORY,
        confidence=shown_confidence(v),
        severity=str(item.severity) if item.severity else "?",
        reports=item.reports,
        why=", ".join(item.reasons),
        why_long="; ".join(long) or ", ".join(item.reasons),
        policy_version=item.policy_version,
    )


def queue_page(
    store: Store, policy: Policy, filters: QueueFilters, *, cursor: str | None = None, limit: int = 50,
    low_confidence: float = 0.6,
) -> QueuePage:  # fmt: skip
    """One page of the review queue under ``filters``, starting at ``cursor`` (None: the first page)."""
    items = review_queue(
        store,
        policy,
        low_confidence=low_confidence,
        category=filters.category or None,
        policy_version=filters.version or None,
        sort=SortKey(filters.sort),
    )
    if filters.search:
        items = [i for i in items if i.sample_id.startswith(filters.search)]
    offset = max(0, int(cursor)) if cursor and cursor.isdigit() else 0
    if offset >= len(items) and items:
        offset = max(0, (len(items) - 1) // limit * limit)  # the queue shrank under the cursor: last page
    rows = [_row(i) for i in items[offset : offset + limit]]
    return QueuePage(
        rows=rows,
        total=len(items),
        offset=offset,
        cursor=str(offset),
        next_cursor=str(offset + limit) if offset + limit < len(items) else None,
        prev_cursor=str(max(0, offset - limit)) if offset > 0 else None,
    )


def sample_exists(store: Store, sample_id: str) -> bool:
    """Whether the store has a verdict for ``sample_id`` (search opens it even when it is not queued)."""
    t = store.table("verdicts")
    with store.engine.connect() as conn:
        return conn.execute(store.sa.select(t.c.id).where(t.c.sample_id == sample_id).limit(1)).first() is not None
