"""The one seam between the app and the review queue (:mod:`kuaimod_open.loop.queue`): pages of rows with
a total, search by sample id, claims.

The queue is an indexed query in the library (keyset pages, counts from the index, leases held in the
store so that two app instances never hand out one item). The app asks only for what it shows: a page
after an opaque cursor, the total behind the filters, and a claim on the item it opens.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from kuaimod_open.judge.flags import REVIEW_TEXT, SHORT_TEXT, Flag
from kuaimod_open.loop import queue as lq
from kuaimod_open.loop.store import Store

NO_CATEGORY = lq.NO_CATEGORY
SortKey = lq.SortKey
# The long explanation of each short "why" label (the queue cell's tooltip).
# Several flags share a short label; the last of them in Flag order is the general one ("escalated").
_WHY_LONG = {SHORT_TEXT[flag]: REVIEW_TEXT[flag] for flag in Flag}


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
    cursor: str | None = None  # the cursor that produced this page (None: the first page)
    next_cursor: str | None = None
    prev_cursor: str | None = None

    @property
    def ids(self) -> list[str]:
        """The page's sample ids, in order."""
        return [r.sample_id for r in self.rows]


def _held(row: lq.QueueRow) -> tuple[str | None, datetime | None]:
    # An expired lease is nobody's.
    if row.claimed_by and row.claim_expires is not None and row.claim_expires > datetime.now(UTC):
        return row.claimed_by, row.claim_expires
    return None, None


def _row(row: lq.QueueRow) -> QueueRow:
    long = [_WHY_LONG.get(reason, reason) for reason in row.reasons]
    holder, until = _held(row)
    return QueueRow(
        sample_id=row.sample_id,
        verdict_id=row.verdict_id,
        title=row.title,
        decision=row.decision,
        category=row.category or NO_CATEGORY,
        confidence=row.confidence,
        severity=str(row.severity) if row.severity is not None else "?",
        reports=row.reports,
        why=", ".join(row.reasons),
        why_long="; ".join(long),
        policy_version=row.policy_version,
        claimed_by=holder,
        claimed_until=until,
    )


def queue_page(
    store: Store, filters: QueueFilters, *, cursor: str | None = None, offset: int = 0, limit: int = lq.PAGE_SIZE
) -> QueuePage:
    """One page of the review queue under ``filters``, from ``cursor`` (None: the first page).

    ``offset`` is where the caller knows this page starts (pages are keyset ranges, so the position is
    counted by the app as it walks them); a search is a single page of matching ids.
    """
    if filters.search:
        found = lq.search_page(store, filters.search, limit=limit)
        return QueuePage(rows=[_row(r) for r in found.rows], total=found.total, offset=0)
    page = lq.queue_page(
        store,
        filters=lq.QueueFilters(category=filters.category or None, policy_version=filters.version or None),
        sort=filters.sort,
        cursor=cursor,
        limit=limit,
    )
    return QueuePage(
        rows=[_row(r) for r in page.rows],
        total=page.total,
        offset=0 if cursor is None else max(0, offset),
        cursor=cursor,
        next_cursor=page.next_cursor,
        prev_cursor=page.prev_cursor,
    )


def queue_row(store: Store, sample_id: str) -> QueueRow | None:
    """The queue row of one sample (pending or not), None when it has no verdict."""
    row = lq.queue_row(store, sample_id)
    return _row(row) if row is not None else None


def filter_choices(store: Store) -> tuple[list[str], list[str]]:
    """The categories and policy versions among pending items (for the filter menus)."""
    return lq.queue_filters(store)


def claim(store: Store, sample_id: str, reviewer: str, lease_s: float) -> bool:
    """Lease the item to ``reviewer`` (or renew the lease); False when someone else holds it."""
    return lq.claim(store, sample_id, reviewer, lease_s)


def release(store: Store, sample_id: str, reviewer: str) -> None:
    """Give the item back (only the holder's lease is released)."""
    lq.release(store, sample_id, reviewer)


def holder(store: Store, sample_id: str) -> tuple[str | None, datetime | None]:
    """Who holds a live lease on the item, and until when (None, None when nobody does)."""
    row = lq.queue_row(store, sample_id)
    return _held(row) if row is not None else (None, None)
