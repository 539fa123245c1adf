"""The review queue as an indexed query: pages, totals, claims.

**What is in the queue.** A sample is *pending* when its latest verdict needs a human (it decided
``review``, was unparsed or failed, or its self-reported confidence is below the store's
low-confidence threshold, :func:`set_low_confidence`) and no human label (reviewer decision or
appeal outcome) is at least as new as that verdict; or when users reported it after its latest human
label. A new verdict or new reports put a decided sample back in the queue.

**How it stays cheap.** Everything the queue needs lives in one row per sample in ``review_queue``
(:class:`kuaimod_open.loop.schema.ReviewQueueRow`), written in the same transaction as the verdict
(:func:`on_verdicts`, called by :func:`kuaimod_open.loop.feedback.record_verdict`) or the feedback
(:func:`on_feedback`), and backfilled for existing stores by migration ``m005_review_queue``. A page
is a keyset range scan over a composite index (``pending`` first, then the sort columns); the total
is a count over the same index. No verdict payload is parsed except those of the rows shown.

**Sorts.** ``uncertainty`` (then severity, reports), ``severity`` (then uncertainty, reports),
``reports`` (then severity, uncertainty): most urgent first, ties oldest verdict first; ``oldest``:
verdict order. Every sort key runs in one direction, so the cursor is one row-value comparison.

**Claims.** :func:`claim` leases an item to a reviewer for ``lease_s`` seconds with one conditional
``UPDATE`` (atomic on SQLite and PostgreSQL, so two app processes never both get it);
:func:`claim_next` hands out the most urgent unclaimed item; a lease that is not renewed expires, and
a decision (:func:`kuaimod_open.loop.feedback.record_decision`) releases it.

**Category filter.** Matches the verdict's main category (indexed); ``NO_CATEGORY`` matches verdicts
naming none. (The old scan also matched ``other_categories``; that cannot be indexed in one column.)
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from kuaimod_open.errors import InputError
from kuaimod_open.judge.flags import SHORT_TEXT, main_reason
from kuaimod_open.judge.policy import Decision, Policy, Severity
from kuaimod_open.judge.verdict import ParseStatus, Verdict
from kuaimod_open.loop.store import Store

SEVERITY_RANK = {Severity.NONE: 0, Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3, Severity.CRITICAL: 4}
RANK_SEVERITY = {rank: severity for severity, rank in SEVERITY_RANK.items()}
NO_CATEGORY = "(no category)"
DEFAULT_LOW_CONFIDENCE = 0.6
LOW_CONFIDENCE_SETTING = "queue.low_confidence"
DEFAULT_LEASE_S = 600.0
PAGE_SIZE = 50
LABEL_KINDS = ("reviewer_decision", "appeal_outcome")  # kuaimod_open.loop.feedback.LABEL_KINDS
REPORT_KIND = "user_report"
QUEUE_HEADERS = ["sample", "title", "decision", "category", "confidence", "severity", "reports", "why", "policy"]


class SortKey(StrEnum):
    """How the queue is ordered (most urgent first)."""

    UNCERTAINTY = "uncertainty"
    SEVERITY = "severity"
    REPORTS = "reports"
    OLDEST = "oldest"


# Sort columns, all descending except OLDEST (ascending); fifo_rank (minus the verdict id) last makes
# every key unique and puts the oldest verdict first among equals.
SORT_COLUMNS: dict[SortKey, tuple[str, ...]] = {
    SortKey.UNCERTAINTY: ("uncertainty", "severity_rank", "reports", "fifo_rank"),
    SortKey.SEVERITY: ("severity_rank", "uncertainty", "reports", "fifo_rank"),
    SortKey.REPORTS: ("reports", "severity_rank", "uncertainty", "fifo_rank"),
    SortKey.OLDEST: ("verdict_id",),
}


@dataclass(frozen=True)
class QueueFilters:
    """Which pending items to show. ``category``: a policy code or :data:`NO_CATEGORY`; None: all."""

    category: str | None = None
    policy_version: str | None = None


@dataclass(frozen=True)
class QueueRow:
    """One pending item, as listed (no payload parsed: open it with its ``verdict_id``)."""

    sample_id: str
    verdict_id: int
    title: str
    decision: str
    category: str | None
    confidence: float | None
    severity_rank: int
    uncertainty: float
    reports: int
    open_reports: int
    reasons: tuple[str, ...]
    policy_version: str
    claimed_by: str | None = None
    claim_expires: datetime | None = None

    @property
    def fifo_rank(self) -> int:
        """Minus the verdict id (the last sort key of the urgency sorts)."""
        return -self.verdict_id

    @property
    def severity(self) -> Severity | None:
        """The highest severity among the verdict's categories (None when it names none the policy knows)."""
        return RANK_SEVERITY.get(self.severity_rank)

    def row(self) -> list[Any]:
        """The item as a display row (see :data:`QUEUE_HEADERS`)."""
        return [
            self.sample_id,
            self.title[:60],
            self.decision,
            self.category or NO_CATEGORY,
            "" if self.confidence is None else round(self.confidence, 2),
            str(self.severity) if self.severity is not None else "?",
            self.reports,
            ", ".join(self.reasons),
            self.policy_version,
        ]


@dataclass(frozen=True)
class QueuePage:
    """One page: ``rows`` (at most ``limit``), the ``total`` pending under the filters, and cursors.

    ``next_cursor``/``prev_cursor`` are opaque strings for :func:`queue_page` (None at either end).
    """

    rows: list[QueueRow]
    total: int
    next_cursor: str | None
    prev_cursor: str | None
    sort: SortKey = SortKey.UNCERTAINTY
    filters: QueueFilters = field(default_factory=QueueFilters)


# --------------------------------------------------------------------------- what a verdict contributes


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


def _why(verdict: Verdict) -> str:
    if verdict.status in (ParseStatus.UNPARSED, ParseStatus.ERROR):
        return str(verdict.status)
    if verdict.decision is Decision.REVIEW:
        # Why a person must look, from the verdict's most important flag (kuaimod_open.judge.flags).
        reason = main_reason(verdict.flags)
        return SHORT_TEXT[reason] if reason is not None else "needs review"
    return ""


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything this project writes is UTC.
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def verdict_columns(verdict: Verdict, verdict_id: int, policy: Policy) -> dict[str, Any]:
    """The queue columns a verdict determines (the feedback-derived ones are kept as they are)."""
    severity = severity_of(verdict, policy)
    return {
        "sample_id": verdict.sample_id,
        "verdict_id": verdict_id,
        "fifo_rank": -verdict_id,
        "verdict_at": _utc(verdict.provenance.created_at),
        "decision": str(verdict.decision),
        "category": verdict.category,
        "policy_version": verdict.provenance.policy_version,
        "self_confidence": verdict.confidence,
        "confidence": shown_confidence(verdict),
        "uncertainty": uncertainty(verdict),
        "severity_rank": SEVERITY_RANK[severity] if severity is not None else -1,
        "review_required": verdict.decision is Decision.REVIEW
        or verdict.status in (ParseStatus.UNPARSED, ParseStatus.ERROR),
        "why": _why(verdict)[:200],
    }


def _pending(sa: Any, t: Any, low: float, *, decided_at: Any = None, open_reports: Any = None) -> Any:
    """SQL for queue membership over a row's columns (overridable by bound values)."""
    decided = t.c.decided_at if decided_at is None else decided_at
    reports = t.c.open_reports if open_reports is None else open_reports
    needs = sa.or_(t.c.review_required, sa.and_(t.c.self_confidence.is_not(None), t.c.self_confidence < low))
    undecided = sa.or_(decided.is_(None), decided < t.c.verdict_at)
    return sa.case((sa.or_(sa.and_(needs, undecided), reports > 0), 1), else_=0)


# --------------------------------------------------------------------------- settings and policy


def low_confidence(store: Store, conn: Any = None) -> float:
    """The store's low-confidence threshold for queue membership (default 0.6)."""
    t = store.table("store_settings")
    query = store.sa.select(t.c.value).where(t.c.name == LOW_CONFIDENCE_SETTING)
    if conn is None:
        with store.engine.connect() as own:
            value = own.execute(query).scalar()
    else:
        value = conn.execute(query).scalar()
    return float(value) if value is not None else DEFAULT_LOW_CONFIDENCE


def set_low_confidence(store: Store, value: float) -> int:
    """Change the threshold and recompute membership in one SQL statement; returns the rows now pending."""
    if not 0.0 <= value <= 1.0:
        raise InputError(f"low-confidence threshold must be between 0 and 1 (got {value})")
    sa, s, t = store.sa, store.table("store_settings"), store.table("review_queue")
    with store.begin() as conn:
        now = datetime.now(UTC)
        changed = s.update().where(s.c.name == LOW_CONFIDENCE_SETTING).values(value=str(value), updated_at=now)
        if conn.execute(changed).rowcount == 0:
            conn.execute(s.insert().values(name=LOW_CONFIDENCE_SETTING, value=str(value), updated_at=now))
        conn.execute(t.update().values(pending=_pending(sa, t, value)))
        return int(conn.execute(sa.select(sa.func.count()).select_from(t).where(t.c.pending == 1)).scalar_one())


def queue_policy(store: Store) -> Policy:
    """The policy whose severities rank the queue: the store's active one, else the shipped default.

    Cached per store object; :func:`rebuild` re-ranks after a policy change.
    """
    cached = store.cache.get("queue_policy")
    if isinstance(cached, Policy):
        return cached
    from pathlib import Path

    from kuaimod_open.judge.policy import default_policy_path, load_policy
    from kuaimod_open.loop.registry import active

    art = active(store, "policy")
    path = Path(art.path) if art is not None and Path(art.path).is_file() else default_policy_path()
    policy = load_policy(path)
    store.cache["queue_policy"] = policy
    return policy


# --------------------------------------------------------------------------- maintenance on write


def on_verdicts(conn: Any, store: Store, verdicts: Sequence[tuple[int, Verdict]], policy: Policy | None = None) -> None:
    """Upsert the queue rows of freshly inserted verdicts, inside the caller's transaction.

    A verdict older than the row's (by id) changes nothing, so out-of-order writers cannot regress it.
    """
    if not verdicts:
        return
    sa, t = store.sa, store.table("review_queue")
    policy = policy or queue_policy(store)
    low = low_confidence(store, conn)
    latest: dict[str, dict[str, Any]] = {}
    for verdict_id, verdict in verdicts:
        cols = verdict_columns(verdict, verdict_id, policy)
        if verdict.sample_id not in latest or latest[verdict.sample_id]["verdict_id"] < verdict_id:
            latest[verdict.sample_id] = cols
    rows = list(latest.values())
    for row in rows:
        confident = row["self_confidence"] is not None and row["self_confidence"] < low
        row.update(pending=int(row["review_required"] or confident), reports=0, open_reports=0, decided_at=None)
    columns = list(rows[0])
    base = _dialect_insert(store)(t)
    bulk_pg = store.engine.dialect.name == "postgresql" and len(rows) > 1
    if bulk_pg:
        # Bulk: COPY into a temporary twin, then one INSERT ... SELECT ... ON CONFLICT DO UPDATE.
        from kuaimod_open.loop.store import copy_to_temp

        temp = sa.table(copy_to_temp(conn, "review_queue", columns, rows), *[sa.column(c) for c in columns])
        base = base.from_select(columns, sa.select(*[temp.c[c] for c in columns]))
    excluded = base.excluded
    fresh = ("verdict_id", "fifo_rank", "verdict_at", "decision", "category", "policy_version", "self_confidence")
    updates: dict[str, Any] = {name: excluded[name] for name in (*fresh, "confidence", "uncertainty")}
    updates.update({name: excluded[name] for name in ("severity_rank", "review_required", "why")})
    # Membership from the new verdict columns and the row's feedback state (decided_at, open_reports).
    needs = sa.or_(
        excluded.review_required, sa.and_(excluded.self_confidence.is_not(None), excluded.self_confidence < low)
    )
    undecided = sa.or_(t.c.decided_at.is_(None), t.c.decided_at < excluded.verdict_at)
    updates["pending"] = sa.case((sa.or_(sa.and_(needs, undecided), t.c.open_reports > 0), 1), else_=0)
    stmt = base.on_conflict_do_update(
        index_elements=[t.c.sample_id], set_=updates, where=t.c.verdict_id < excluded.verdict_id
    )
    if bulk_pg:
        conn.execute(stmt)
        conn.exec_driver_sql("DELETE FROM review_queue_in")
    else:
        conn.execute(stmt, rows)


def _dialect_insert(store: Store) -> Any:
    if store.engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def on_feedback(conn: Any, store: Store, sample_ids: Iterable[str], labelled: Iterable[str] = ()) -> None:
    """Refresh the feedback-derived columns (latest label, reports, open reports, membership) of samples.

    Reads only those samples' label and report events (indexed by sample id), inside the caller's
    transaction. ``labelled``: samples that just got a human label, whose claim ends with it.
    """
    ids = sorted(set(sample_ids))
    if not ids:
        return
    sa, f, t = store.sa, store.table("feedback"), store.table("review_queue")
    low = low_confidence(store, conn)
    state: dict[str, list[Any]] = {}  # sample -> [decided_at, report times]
    for chunk in _chunks(ids, 5000):
        query = sa.select(f.c.sample_id, f.c.kind, f.c.created_at).where(
            f.c.sample_id.in_(chunk), f.c.kind.in_([*LABEL_KINDS, REPORT_KIND])
        )
        for sample_id, kind, created in conn.execute(query):
            entry = state.setdefault(sample_id, [None, []])
            when = _utc(created)
            if kind in LABEL_KINDS:
                entry[0] = when if entry[0] is None or (when is not None and when > entry[0]) else entry[0]
            else:
                entry[1].append(when)
    params = []
    just_labelled = set(labelled)
    for sample_id in ids:
        decided, reports = state.get(sample_id, [None, []])
        open_reports = sum(1 for r in reports if decided is None or (r is not None and r > decided))
        done = sample_id in just_labelled
        params.append({"sid": sample_id, "d": decided, "r": len(reports), "o": open_reports, "c": done, "c2": done})
    decided_param, open_param = sa.bindparam("d", type_=t.c.decided_at.type), sa.bindparam("o", type_=sa.Integer)
    stmt = (
        t.update()
        .where(t.c.sample_id == sa.bindparam("sid"))
        .values(
            decided_at=decided_param,
            reports=sa.bindparam("r"),
            open_reports=open_param,
            pending=_pending(sa, t, low, decided_at=decided_param, open_reports=open_param),
            # A human label ends the reviewer's lease on it.
            claimed_by=sa.case((sa.bindparam("c", type_=sa.Boolean), None), else_=t.c.claimed_by),
            claim_expires=sa.case((sa.bindparam("c2", type_=sa.Boolean), None), else_=t.c.claim_expires),
        )
    )
    conn.execute(stmt, params)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def rebuild(store: Store, policy: Policy | None = None, *, conn: Any = None, batch: int = 5000) -> int:
    """Recompute the whole queue from the latest verdict of every sample and all feedback; returns rows.

    For the backfill migration and after the active policy changed severities. Parses each sample's
    latest verdict once (the only full pass over payloads; page queries never do).
    """
    if conn is None:
        with store.begin() as own:
            return rebuild(store, policy, conn=own, batch=batch)
    sa, v, t = store.sa, store.table("verdicts"), store.table("review_queue")
    policy = policy or queue_policy(store)
    conn.execute(t.delete())
    latest = sa.select(sa.func.max(v.c.id).label("id")).group_by(v.c.sample_id).subquery()
    query = sa.select(v.c.id, v.c.payload).join(latest, latest.c.id == v.c.id).order_by(v.c.id)
    total, chunk, samples = 0, [], []
    for row in conn.execute(query).yield_per(batch):
        verdict = Verdict.model_validate_json(row.payload)
        chunk.append((int(row.id), verdict))
        samples.append(verdict.sample_id)
        if len(chunk) >= batch:
            on_verdicts(conn, store, chunk, policy)
            total += len(chunk)
            chunk = []
    on_verdicts(conn, store, chunk, policy)
    total += len(chunk)
    f = store.table("feedback")
    with_feedback = [
        r[0] for r in conn.execute(sa.select(f.c.sample_id).where(f.c.kind.in_([*LABEL_KINDS, REPORT_KIND])).distinct())
    ]
    on_feedback(conn, store, with_feedback)
    return total


# --------------------------------------------------------------------------- reading


def _encode(values: Sequence[Any], direction: str) -> str:
    raw = json.dumps({"k": list(values), "d": direction}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, width: int) -> tuple[list[Any], str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        values, direction = data["k"], data["d"]
        if not isinstance(values, list) or len(values) != width or direction not in ("next", "prev"):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise InputError(
            "invalid queue cursor (it belongs to another sort, or was edited): start from page 1"
        ) from None
    return values, direction


def _where(store: Store, filters: QueueFilters) -> list[Any]:
    t = store.table("review_queue")
    clauses = [t.c.pending == 1]
    if filters.category == NO_CATEGORY:
        clauses.append(t.c.category.is_(None))
    elif filters.category:
        clauses.append(t.c.category == filters.category)
    if filters.policy_version:
        clauses.append(t.c.policy_version == filters.policy_version)
    return clauses


def queue_count(store: Store, filters: QueueFilters | None = None, *, conn: Any = None) -> int:
    """How many items are pending under ``filters`` (an index-only count)."""
    sa, t = store.sa, store.table("review_queue")
    query = sa.select(sa.func.count()).select_from(t).where(*_where(store, filters or QueueFilters()))
    if conn is not None:
        return int(conn.execute(query).scalar_one())
    with store.engine.connect() as own:
        return int(own.execute(query).scalar_one())


def _reasons(why: str, confidence: float | None, low: float, open_reports: int) -> tuple[str, ...]:
    reasons = [why] if why else []
    if confidence is not None and confidence < low and "low confidence" not in reasons:
        reasons.append("low confidence")
    if open_reports:
        reasons.append(f"reported x{open_reports}")
    return tuple(reasons)


def verdict_reasons(verdict: Verdict, low: float, open_reports: int = 0) -> list[str]:
    """Why an item is listed ("injection suspected", "low confidence", "reported x2", ...), as the queue says it."""
    return list(_reasons(_why(verdict), shown_confidence(verdict), low, open_reports))


def _row(r: Any, low: float) -> QueueRow:
    return QueueRow(
        sample_id=r.sample_id,
        verdict_id=int(r.verdict_id),
        title=r.title or "",
        decision=r.decision,
        category=r.category,
        confidence=r.confidence,
        severity_rank=int(r.severity_rank),
        uncertainty=float(r.uncertainty),
        reports=int(r.reports),
        open_reports=int(r.open_reports),
        reasons=_reasons(r.why, r.confidence, low, int(r.open_reports)),
        policy_version=r.policy_version,
        claimed_by=r.claimed_by,
        claim_expires=_utc(r.claim_expires),
    )


def _select_rows(store: Store) -> Any:
    sa, t, s = store.sa, store.table("review_queue"), store.table("samples")
    return sa.select(t, s.c.title).select_from(t.outerjoin(s, s.c.id == t.c.sample_id))


def queue_page(
    store: Store,
    *,
    filters: QueueFilters | None = None,
    sort: SortKey | str = SortKey.UNCERTAINTY,
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
    with_total: bool = True,
) -> QueuePage:
    """One page of the pending items, most urgent first, from ``cursor`` (None: the first page).

    Cost is one index range scan of ``limit + 1`` rows plus (``with_total``) one indexed count,
    whatever the size of the store.
    """
    sa, t = store.sa, store.table("review_queue")
    sort, filters = SortKey(sort), filters or QueueFilters()
    if not 1 <= limit <= 1000:
        raise InputError(f"page size must be between 1 and 1000 (got {limit})")
    names = SORT_COLUMNS[sort]
    cols = [t.c[name] for name in names]
    descending = sort is not SortKey.OLDEST
    direction = "next"
    query = _select_rows(store).where(*_where(store, filters))
    if cursor:
        values, direction = _decode(cursor, len(names))
        key, bound = sa.tuple_(*cols), sa.tuple_(*[sa.literal(v) for v in values])
        forward = direction == "next"
        query = query.where(key < bound if forward == descending else key > bound)
    # Walking backwards (prev) reads the index the other way and flips the rows afterwards.
    ascending = (not descending) if direction == "next" else descending
    query = query.order_by(*[c.asc() if ascending else c.desc() for c in cols]).limit(limit + 1)
    with store.engine.connect() as conn:
        fetched = conn.execute(query).all()
        total = queue_count(store, filters, conn=conn) if with_total else -1
        low = low_confidence(store, conn)
    more = len(fetched) > limit
    fetched = fetched[:limit]
    if direction == "prev":
        fetched.reverse()
    rows = [_row(r, low) for r in fetched]
    keys = [[getattr(r, n) for n in names] for r in fetched]
    at_start = cursor is None or (direction == "prev" and not more)
    at_end = direction == "next" and not more
    return QueuePage(
        rows=rows,
        total=total,
        next_cursor=_encode(keys[-1], "next") if keys and not at_end else None,
        prev_cursor=_encode(keys[0], "prev") if keys and not at_start else None,
        sort=sort,
        filters=filters,
    )


def search_page(store: Store, prefix: str, *, limit: int = PAGE_SIZE) -> QueuePage:
    """The pending items whose sample id starts with ``prefix``, by id (for the review app's search box).

    A range scan of the primary key (``prefix <= sample_id < prefix + U+10FFFF``), not a LIKE: the same on
    SQLite and PostgreSQL, case-sensitive, and indexed. The total counts the same range.
    """
    sa, t = store.sa, store.table("review_queue")
    if not 1 <= limit <= 1000:
        raise InputError(f"page size must be between 1 and 1000 (got {limit})")
    in_range = [t.c.sample_id >= prefix, t.c.sample_id < prefix + "\U0010ffff", t.c.pending == 1]
    with store.engine.connect() as conn:
        fetched = conn.execute(_select_rows(store).where(*in_range).order_by(t.c.sample_id).limit(limit)).all()
        total = int(conn.execute(sa.select(sa.func.count()).select_from(t).where(*in_range)).scalar_one())
        low = low_confidence(store, conn)
    return QueuePage(rows=[_row(r, low) for r in fetched], total=total, next_cursor=None, prev_cursor=None)


def queue_filters(store: Store) -> tuple[list[str], list[str]]:
    """The categories and policy versions among pending items (for the filter menus)."""
    sa, t = store.sa, store.table("review_queue")
    with store.engine.connect() as conn:
        cats = [r[0] for r in conn.execute(sa.select(t.c.category).where(t.c.pending == 1).distinct()) if r[0]]
        versions = [r[0] for r in conn.execute(sa.select(t.c.policy_version).where(t.c.pending == 1).distinct())]
    return sorted(cats), sorted(v for v in versions if v)


def queue_row(store: Store, sample_id: str) -> QueueRow | None:
    """The queue row of one sample (pending or not), or None when it has no verdict."""
    t = store.table("review_queue")
    with store.engine.connect() as conn:
        r = conn.execute(_select_rows(store).where(t.c.sample_id == sample_id)).first()
        return _row(r, low_confidence(store, conn)) if r is not None else None


# --------------------------------------------------------------------------- claims


def claim(store: Store, sample_id: str, reviewer: str, lease_s: float = DEFAULT_LEASE_S) -> bool:
    """Lease a pending item to ``reviewer`` (or renew their lease); False when someone else holds it.

    One conditional UPDATE, so two processes racing for one item cannot both win.
    """
    if not reviewer:
        raise InputError("a claim needs the reviewer's name")
    sa, t = store.sa, store.table("review_queue")
    now = datetime.now(UTC)
    free = sa.or_(t.c.claimed_by.is_(None), t.c.claimed_by == reviewer, t.c.claim_expires < now)
    with store.begin() as conn:
        result = conn.execute(
            t.update()
            .where(t.c.sample_id == sample_id, t.c.pending == 1, free)
            .values(claimed_by=reviewer, claim_expires=now + timedelta(seconds=lease_s))
        )
        return bool(result.rowcount == 1)


def release(store: Store, sample_id: str, reviewer: str) -> bool:
    """Give an item back (only the holder can); True when a lease was released."""
    t = store.table("review_queue")
    with store.begin() as conn:
        result = conn.execute(
            t.update()
            .where(t.c.sample_id == sample_id, t.c.claimed_by == reviewer)
            .values(claimed_by=None, claim_expires=None)
        )
        return bool(result.rowcount == 1)


def claim_next(
    store: Store,
    reviewer: str,
    *,
    filters: QueueFilters | None = None,
    sort: SortKey | str = SortKey.UNCERTAINTY,
    lease_s: float = DEFAULT_LEASE_S,
    after: str | None = None,
) -> QueueRow | None:
    """Lease the most urgent pending item nobody else holds (the reviewer's own lease counts as free).

    ``after``: a cursor (e.g. from the item just decided) to continue from instead of the top.
    Candidates come from the same index as the pages; a candidate taken by another process between
    the read and the conditional UPDATE is skipped and the next one tried.
    """
    sa, t = store.sa, store.table("review_queue")
    sort, filters = SortKey(sort), filters or QueueFilters()
    names = SORT_COLUMNS[sort]
    cols = [t.c[name] for name in names]
    descending = sort is not SortKey.OLDEST
    for _attempt in range(20):
        now = datetime.now(UTC)
        free = sa.or_(t.c.claimed_by.is_(None), t.c.claimed_by == reviewer, t.c.claim_expires < now)
        query = sa.select(t.c.sample_id).where(*_where(store, filters), free)
        if after:
            values, _ = _decode(after, len(names))
            key, bound = sa.tuple_(*cols), sa.tuple_(*[sa.literal(v) for v in values])
            query = query.where(key < bound if descending else key > bound)
        query = query.order_by(*[c.desc() if descending else c.asc() for c in cols]).limit(8)
        with store.engine.connect() as conn:
            candidates = [r[0] for r in conn.execute(query)]
        if not candidates:
            return None
        for sample_id in candidates:
            if claim(store, sample_id, reviewer, lease_s):
                return queue_row(store, sample_id)
    return None


def cursor_at(row: QueueRow, sort: SortKey | str = SortKey.UNCERTAINTY) -> str:
    """A cursor positioned just after ``row`` in ``sort`` order (for :func:`claim_next` ``after``)."""
    names = SORT_COLUMNS[SortKey(sort)]
    return _encode([getattr(row, n) for n in names], "next")
