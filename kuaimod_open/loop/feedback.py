"""Feedback: user reports, dislikes, comment signals, reviewer decisions and appeal outcomes.

Events are validated (the category must be in the policy), stored insert-only with a stable
``event_id`` so that re-importing a file changes nothing, and queried for the two things the
common-law loop needs: the current human label of each sample, and the disagreements between what
the model decided and what a human later decided.
"""

from __future__ import annotations

import csv
import hashlib
import json
import operator
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kuaimod_open._lazy import require
from kuaimod_open.errors import ConfigError, InputError
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.policy import Decision, Policy
from kuaimod_open.judge.verdict import Verdict
from kuaimod_open.loop.store import Store, copy_to_temp


class FeedbackKind(StrEnum):
    """Where a signal comes from. Only reviewer decisions and appeal outcomes are labels."""

    USER_REPORT = "user_report"
    DISLIKE = "dislike"
    COMMENT_SIGNAL = "comment_signal"
    REVIEWER_DECISION = "reviewer_decision"
    APPEAL_OUTCOME = "appeal_outcome"

    @property
    def is_label(self) -> bool:
        """Whether a human decided the case (the event carries a category to learn from)."""
        return self in (FeedbackKind.REVIEWER_DECISION, FeedbackKind.APPEAL_OUTCOME)


LABEL_KINDS = (FeedbackKind.REVIEWER_DECISION.value, FeedbackKind.APPEAL_OUTCOME.value)


class FeedbackEvent(BaseModel):
    """One feedback event, as imported from CSV/JSONL or written by the review UI."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    sample_id: str = Field(min_length=1)
    kind: FeedbackKind
    category: str | None = Field(default=None, description="Policy code or tag; required for labels")
    decision: Decision | None = None
    reason: str = ""
    author: str = Field(min_length=1)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    event_id: str | None = Field(default=None, description="Stable id; derived from the content when absent")
    source: str = ""

    @field_validator("category", "decision", "event_id", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # "Latest" compares times, and SQLite stores them without a zone: keep every time in UTC (a time
        # without a zone is taken as UTC), so 09:00+08:00 sorts before 02:00Z as it should.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def resolved(self, policy: Policy) -> FeedbackEvent:
        """The event with its category as a policy code, its decision filled in, and an event id."""
        category = None
        if self.category is not None:
            cat = policy.find(self.category)
            if cat is None:
                raise InputError(
                    f"feedback for sample {self.sample_id}: unknown category '{self.category}' "
                    f"(use a code or tag of policy {policy.version}: {', '.join(policy.codes())})"
                )
            category = cat.code
        if self.kind.is_label and category is None:
            raise InputError(f"feedback for sample {self.sample_id}: a {self.kind} needs a category")
        decision = self.decision
        if decision is None and category is not None:
            decision = policy.category(category).action
        if self.kind.is_label and category is not None and decision is not None:
            self._check_against_policy(policy, category, decision)
        event_id = self.event_id or self._content_id(category)
        return self.model_copy(update={"category": category, "decision": decision, "event_id": event_id})

    def _check_against_policy(self, policy: Policy, category: str, decision: Decision) -> None:
        # The same two rules the review UI applies (check_decision), for labels from files and the API:
        # a contradictory label would teach the loop the opposite of the policy.
        if category == policy.benign and decision in (Decision.RESTRICT, Decision.BLOCK):
            raise InputError(
                f"feedback for sample {self.sample_id}: {category} is the benign class and cannot be {decision}ed; "
                "name the category the video violates"
            )
        if category != policy.benign and decision is Decision.ALLOW:
            code = self.reason.split(":", 1)[0].strip()
            if code not in EXCEPTION_REASONS:
                raise InputError(
                    f"feedback for sample {self.sample_id}: allowing {category} (a violation) needs an exception "
                    f"reason code at the start of 'reason' ({', '.join(EXCEPTION_REASONS)}, e.g. "
                    f"'news_or_education: documentary'); if nothing violates the policy use {policy.benign}"
                )

    def _content_id(self, category: str | None) -> str:
        key = f"{self.sample_id}|{self.kind}|{category}|{self.author}|{self.created_at.isoformat()}|{self.reason}"
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


class Disagreement(NamedTuple):
    """A model verdict that a later human decision contradicts."""

    verdict: Verdict
    feedback: FeedbackEvent
    feedback_id: int


# --------------------------------------------------------------------------- writing


BATCH = 5000  # rows per executemany / COPY batch
COPY_FROM = 64  # PostgreSQL: from this many rows on, COPY (a temporary table costs more than a few INSERTs)


def _sample_row(store: Store, sample: Sample, now: datetime) -> dict[str, Any]:
    frames = [{"path": str(f.path), "index": f.index, "timestamp": f.timestamp} for f in sample.frames]
    return {
        "id": sample.id,
        "title": sample.title,
        "ocr": sample.ocr,
        "asr": sample.asr,
        "comments": store.dump_json(list(sample.comments)),
        "video": str(sample.video) if sample.video else None,
        "frames": store.dump_json(frames),  # Frame's fields, as model_dump(mode="json") writes them
        "label": sample.label,
        "hashes": sample.hashes.model_dump_json() if sample.hashes else None,
        "created_at": now,
    }


def record_sample(store: Store, sample: Sample) -> None:
    """Insert a sample's text (first write wins; later writes of the same id are ignored)."""
    record_samples(store, [sample])


def record_samples(store: Store, samples: Sequence[Sample]) -> int:
    """Insert many samples in batches (first write of an id wins); returns how many were new."""
    t = store.table("samples")
    now = datetime.now(UTC)
    unique = list({s.id: s for s in reversed(samples)}.values())[::-1]
    inserted = 0
    with store.begin() as conn:
        for chunk in _chunks(unique, BATCH):
            rows = [_sample_row(store, s, now) for s in chunk]
            if store.engine.dialect.name == "postgresql" and len(rows) >= COPY_FROM:
                inserted += _copy_insert(conn, "samples", list(rows[0]), rows, conflict="(id) DO NOTHING")
            elif store.engine.dialect.name == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as pg_insert

                # rowcount of an executemany is not reliable here; count the RETURNING rows instead.
                stmt = pg_insert(t).on_conflict_do_nothing(index_elements=["id"]).returning(t.c.id)
                inserted += len(conn.execute(stmt, rows).all())
            else:
                inserted += conn.execute(t.insert().prefix_with("OR IGNORE"), rows).rowcount
    return int(inserted)


def _copy_insert(
    conn: Any, table: str, columns: Sequence[str], rows: Sequence[dict[str, Any]], *, conflict: str
) -> int:
    """PostgreSQL: COPY rows into a temporary twin of ``table``, then INSERT them in order ON CONFLICT ...

    COPY avoids building one huge parameterised INSERT (psycopg spends seconds parsing those); the
    temporary table lets ON CONFLICT keep the insert idempotent under concurrent writers.
    """
    temp = copy_to_temp(conn, table, columns, rows)
    names = ", ".join(columns)
    inserted = conn.exec_driver_sql(
        f"INSERT INTO {table} ({names}) SELECT {names} FROM {temp} ORDER BY copy_seq ON CONFLICT {conflict}"
    ).rowcount
    conn.exec_driver_sql(f"DELETE FROM {temp}")
    return int(inserted)


def _verdict_row(verdict: Verdict) -> dict[str, Any]:
    p = verdict.provenance
    return {
        "sample_id": verdict.sample_id,
        "decision": str(verdict.decision),
        "category": verdict.category,
        "confidence": verdict.confidence,
        "status": str(verdict.status),
        "stage": str(verdict.stage),
        "model": p.model,
        "adapter": p.adapter,
        "policy_version": p.policy_version,
        "policy_digest": p.policy_digest,
        "prompt_digest": p.prompt_digest,
        "payload": verdict.model_dump_json(),
        "created_at": p.created_at,
    }


def record_verdict(store: Store, verdict: Verdict, *, policy: Policy | None = None) -> int:
    """Append a verdict (never updated) and update its review-queue row; returns the verdict's row id.

    ``policy`` ranks the verdict's severity in the queue (default: the store's active policy).
    """
    return record_verdicts(store, [verdict], policy=policy)[0]


def record_verdicts(store: Store, verdicts: Sequence[Verdict], *, policy: Policy | None = None) -> list[int]:
    """Append many verdicts in one transaction (batched), with their queue rows; returns their row ids."""
    from kuaimod_open.loop import queue

    t = store.table("verdicts")
    ids: list[int] = []
    with store.begin() as conn:
        for chunk in _chunks(list(verdicts), BATCH):
            rows = [_verdict_row(v) for v in chunk]
            if len(rows) == 1:
                chunk_ids = [int(conn.execute(t.insert().values(rows[0])).inserted_primary_key[0])]
            elif store.engine.dialect.name != "sqlite" and len(rows) < COPY_FROM:
                result = conn.execute(t.insert().returning(t.c.id, sort_by_parameter_order=True), rows)
                chunk_ids = [int(r[0]) for r in result]
            elif store.engine.dialect.name == "sqlite":
                # SQLite gives RETURNING rows in no guaranteed order (SQLAlchemy then inserts row by row).
                # This transaction holds the write lock, so new rowids are max(id)+1, +2, ... in order.
                before = int(
                    conn.execute(store.sa.select(store.sa.func.coalesce(store.sa.func.max(t.c.id), 0))).scalar_one()
                )
                conn.execute(t.insert(), rows)
                chunk_ids = list(range(before + 1, before + 1 + len(rows)))
                after = conn.execute(store.sa.select(store.sa.func.max(t.c.id))).scalar_one()
                if after != chunk_ids[-1]:
                    raise RuntimeError(f"verdict ids not contiguous ({before}+{len(rows)} != {after}); nothing written")
            else:
                # PostgreSQL: reserve the ids from the sequence, then COPY the rows with them.
                seq = conn.execute(store.sa.text("SELECT pg_get_serial_sequence('verdicts', 'id')")).scalar_one()
                chunk_ids = [
                    int(r[0])
                    for r in conn.execute(
                        store.sa.text("SELECT nextval(:seq) FROM generate_series(1, :n)"), {"seq": seq, "n": len(rows)}
                    )
                ]
                raw = conn.connection.dbapi_connection
                columns = ("id", *rows[0])
                with raw.cursor() as cur, cur.copy(f"COPY verdicts ({', '.join(columns)}) FROM STDIN") as copy:
                    for vid, row in zip(chunk_ids, rows, strict=True):
                        copy.write_row((vid, *row.values()))
            ids.extend(chunk_ids)
            queue.on_verdicts(conn, store, list(zip(chunk_ids, chunk, strict=True)), policy)
    return ids


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


FEEDBACK_COLUMNS = ("event_id", "sample_id", "kind", "category", "decision", "reason", "author", "created_at", "source")


def _feedback_row(event: FeedbackEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "sample_id": event.sample_id,
        "kind": str(event.kind),
        "category": event.category,
        "decision": str(event.decision) if event.decision else None,
        "reason": event.reason,
        "author": event.author,
        "created_at": event.created_at,
        "source": event.source,
    }


def add_feedback(store: Store, event: FeedbackEvent, policy: Policy) -> bool:
    """Insert one event; returns False when an event with the same id is already stored."""
    resolved = event.resolved(policy)
    inserted = _insert_feedback(store, [resolved]) == 1
    if inserted and resolved.kind.is_label:
        _sync_bank(store, [resolved.sample_id], policy)
    return inserted


def _sync_bank(store: Store, sample_ids: Sequence[str], policy: Policy) -> None:
    from kuaimod_open.loop.bank import sync_labels

    # A reviewer's block/restrict banks the video; a relabel retires what the old label banked.
    sync_labels(store, sample_ids, policy)


def add_feedback_many(store: Store, events: Sequence[FeedbackEvent], policy: Policy) -> int:
    """Validate every event against the policy, then insert them in one batched transaction.

    The bulk form of :func:`add_feedback` (COPY on PostgreSQL); returns how many were new.
    """
    return _insert_feedback(store, [e.resolved(policy) for e in events])


def _insert_feedback(store: Store, events: Sequence[FeedbackEvent]) -> int:
    """Insert resolved events in import order, skipping stored event ids; returns how many were new.

    One transaction: the events and the review-queue rows they change commit together. PostgreSQL:
    COPY into a temporary table, then one INSERT ... ON CONFLICT DO NOTHING in file order. SQLite:
    batched INSERT OR IGNORE. Both keep the import order in the row ids (ties go by import order).
    """
    from kuaimod_open.loop import queue

    unique = list({e.event_id: e for e in reversed(events)}.values())[::-1]  # first occurrence wins
    if not unique:
        return 0
    t = store.table("feedback")
    with store.begin() as conn:
        if store.engine.dialect.name == "postgresql" and len(unique) >= COPY_FROM:
            inserted = _copy_feedback(conn, unique)
        elif store.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            # rowcount of an executemany is not reliable here; count the RETURNING rows instead.
            stmt = pg_insert(t).on_conflict_do_nothing(index_elements=["event_id"]).returning(t.c.id)
            inserted = len(conn.execute(stmt, [_feedback_row(e) for e in unique]).all())
        else:
            inserted = 0
            # The driver's executemany with SQLAlchemy's own conversion of the times (same stored text):
            # building SQLAlchemy parameters per row cost more than SQLite's insert itself.
            to_db = t.c.created_at.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
            sql = (
                f"INSERT OR IGNORE INTO feedback ({', '.join(FEEDBACK_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in FEEDBACK_COLUMNS)})"
            )
            pick = operator.itemgetter(*FEEDBACK_COLUMNS)
            for chunk in _chunks(unique, BATCH):
                rows = [_feedback_row(e) for e in chunk]
                for row in rows:
                    row["created_at"] = to_db(row["created_at"])
                cursor = conn.connection.dbapi_connection.cursor()
                cursor.executemany(sql, [pick(row) for row in rows])
                inserted += cursor.rowcount
                cursor.close()
        if inserted:
            labelled = {e.sample_id for e in unique if e.kind.is_label}
            queue.on_feedback(conn, store, {e.sample_id for e in unique}, labelled)
    return int(inserted)


def _copy_feedback(conn: Any, events: Sequence[FeedbackEvent]) -> int:
    rows = [_feedback_row(e) for e in events]
    return _copy_insert(conn, "feedback", FEEDBACK_COLUMNS, rows, conflict="(event_id) DO NOTHING")


class ImportResult(NamedTuple):
    """What an import did.

    ``ties``: samples whose current label was decided by import order (see :func:`label_ties`), for a
    person to check.
    """

    read: int
    inserted: int
    duplicates: int
    ties: tuple[str, ...] = ()


def read_feedback_file(path: str | Path, *, source: str = "") -> list[FeedbackEvent]:
    """Validate a CSV or JSONL feedback file; every bad row is reported with its line number.

    ``source``: recorded on rows that name none (set after the event id is derived, which it does not change).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Feedback file not found: {path}")
    rows: list[tuple[int, dict[str, Any]]]
    if path.suffix.lower() == ".csv":
        # utf-8-sig: a byte-order mark (Excel, Windows editors) is not part of the first column's name.
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = [(n + 2, dict(r)) for n, r in enumerate(csv.DictReader(handle))]
    elif path.suffix.lower() in (".jsonl", ".json"):
        from kuaimod_open.ingest.sample import read_jsonl

        rows = list(read_jsonl(path))
    else:
        raise ConfigError(f"{path}: feedback files must be .csv or .jsonl")
    events, problems = [], []
    for line, row in rows:
        fields = {k: v for k, v in row.items() if v is not None and v != ""}
        if "event_id" not in fields:
            # Identical rows get identical ids, so re-importing a file (even one without timestamps,
            # which default to the import time) inserts nothing twice.
            canonical = json.dumps(fields, ensure_ascii=False, sort_keys=True, default=str)
            fields["event_id"] = "row-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:28]
        if source and "source" not in fields:
            fields["source"] = source
        try:
            events.append(FeedbackEvent.model_validate(fields))
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            problems.append(f"{path}:{line}: {detail}")
    if problems:
        raise InputError(f"{len(problems)} invalid feedback row(s), nothing imported:\n  " + "\n  ".join(problems[:20]))
    return events


def import_feedback(store: Store, path: str | Path, policy: Policy) -> ImportResult:
    """Validate the whole file first, then insert in batches; re-importing the same file inserts nothing.

    Every row is checked against the policy (unknown categories, a benign label that blocks, an
    allowed violation without an exception reason) before anything is written; one transaction then
    inserts the events and updates the review queue. Label ties among the imported samples are
    returned in :attr:`ImportResult.ties`.
    """
    events = read_feedback_file(path, source=f"import:{Path(path).name}")
    resolved, problems = [], []
    for number, event in enumerate(events, start=1):
        try:
            resolved.append(event.resolved(policy))
        except InputError as exc:
            problems.append(f"row {number}: {exc}")
    if problems:
        raise InputError(
            f"{len(problems)} feedback row(s) contradict the policy, nothing imported:\n  " + "\n  ".join(problems[:20])
        )
    inserted = _insert_feedback(store, resolved)
    if inserted:
        _sync_bank(store, sorted({e.sample_id for e in resolved if e.kind.is_label}), policy)
    ties = label_ties(store, {e.sample_id for e in resolved if e.kind.is_label})
    return ImportResult(
        read=len(events), inserted=inserted, duplicates=len(events) - inserted, ties=tuple(sorted(ties))
    )


# --------------------------------------------------------------------------- reading


def feedback_rows(store: Store, *, after_id: int = 0, kinds: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Feedback rows with id > ``after_id`` (optionally only some kinds), oldest first."""
    t = store.table("feedback")
    query = store.sa.select(t).where(t.c.id > after_id).order_by(t.c.id)
    if kinds:
        query = query.where(t.c.kind.in_(list(kinds)))
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def event_from_row(row: dict[str, Any]) -> FeedbackEvent:
    """A stored feedback row as an event."""
    return FeedbackEvent(
        sample_id=row["sample_id"],
        kind=row["kind"],
        category=row["category"],
        decision=row["decision"],
        reason=row["reason"] or "",
        author=row["author"],
        created_at=row["created_at"],
        event_id=row["event_id"],
        source=row.get("source") or "",
    )


def current_labels(store: Store) -> dict[str, FeedbackEvent]:
    """The current human label per sample: the latest decision (reviewer or appeal) by ``created_at``.

    Relabels keep their history. Two labels of one sample at the same instant are decided by import
    order (the later row wins); :func:`label_ties` lists where that happened with different outcomes.
    """
    t = store.table("feedback")
    query = store.sa.select(t).where(t.c.kind.in_(LABEL_KINDS)).order_by(t.c.created_at, t.c.id)
    latest: dict[str, FeedbackEvent] = {}
    with store.engine.connect() as conn:
        for row in conn.execute(query):
            latest[row.sample_id] = event_from_row(dict(row._mapping))
    return latest


def label_ties(store: Store, sample_ids: Iterable[str] | None = None) -> set[str]:
    """Samples whose current label was decided by import order.

    That is: the latest ``created_at`` of the sample's labels is shared by labels with different outcomes
    (category or decision).
    """
    sa, t = store.sa, store.table("feedback")
    ids = None if sample_ids is None else sorted(set(sample_ids))
    latest = (
        sa.select(t.c.sample_id, sa.func.max(t.c.created_at).label("at"))
        .where(t.c.kind.in_(LABEL_KINDS))
        .group_by(t.c.sample_id)
    )
    found: set[str] = set()
    with store.engine.connect() as conn:
        for chunk in [None] if ids is None else list(_chunks(ids, BATCH)):
            sub = (latest if chunk is None else latest.where(t.c.sample_id.in_(chunk))).subquery()
            query = (
                sa.select(t.c.sample_id)
                .join(sub, sa.and_(sub.c.sample_id == t.c.sample_id, sub.c.at == t.c.created_at))
                .where(t.c.kind.in_(LABEL_KINDS))
                .group_by(t.c.sample_id)
                .having(
                    sa.func.count(
                        sa.distinct(sa.func.coalesce(t.c.category, "") + "|" + sa.func.coalesce(t.c.decision, ""))
                    )
                    > 1
                )
            )
            found.update(r[0] for r in conn.execute(query))
    return found


def stored_samples(store: Store, ids: Iterable[str] | None = None) -> dict[str, Sample]:
    """Samples by id, rebuilt from the store."""
    from kuaimod_open.ingest.pdq import VideoHashes
    from kuaimod_open.ingest.sample import Frame

    t = store.table("samples")
    query = store.sa.select(t)
    if ids is not None:
        query = query.where(t.c.id.in_(list(ids)))
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
    return {
        r["id"]: Sample(
            id=r["id"],
            title=r["title"],
            ocr=r["ocr"],
            asr=r["asr"],
            comments=tuple(json.loads(r["comments"] or "[]")),
            video=r["video"],
            frames=tuple(Frame.model_validate(f) for f in json.loads(r["frames"] or "[]")),
            label=r["label"],
            hashes=VideoHashes.model_validate_json(r["hashes"]) if r.get("hashes") else None,
        )
        for r in rows
    }


def latest_verdicts(store: Store) -> dict[str, tuple[int, Verdict]]:
    """The most recent verdict per sample, with its row id."""
    t = store.table("verdicts")
    with store.engine.connect() as conn:
        rows = conn.execute(store.sa.select(t.c.id, t.c.sample_id, t.c.payload).order_by(t.c.id)).all()
    return {r.sample_id: (r.id, Verdict.model_validate_json(r.payload)) for r in rows}


def disagreements(store: Store, *, after_id: int = 0) -> list[Disagreement]:
    """Human decisions (newer than ``after_id``) that contradict the model's latest verdict."""
    verdicts = latest_verdicts(store)
    found = []
    for row in feedback_rows(store, after_id=after_id, kinds=LABEL_KINDS):
        latest = verdicts.get(row["sample_id"])
        if latest is None:
            continue
        verdict = latest[1]
        if verdict.category != row["category"]:
            found.append(Disagreement(verdict, event_from_row(row), int(row["id"])))
    return found


def export_feedback(store: Store, out: str | Path, fmt: str = "jsonl") -> int:
    """Write every feedback event to JSONL or Parquet; returns the number of rows."""
    rows = feedback_rows(store)
    for row in rows:
        row["created_at"] = row["created_at"].isoformat() if row["created_at"] else None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with out.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    elif fmt == "parquet":
        pa = require("pyarrow", extra="store", purpose="Parquet export")
        parquet = require("pyarrow.parquet", extra="store", purpose="Parquet export")
        parquet.write_table(pa.Table.from_pylist(rows), out)
    else:
        raise ConfigError(f"unknown export format '{fmt}' (use jsonl or parquet)")
    return len(rows)


# --------------------------------------------------------------------------- reviewer decisions
# A reviewer's decision is a label the loop learns from and an action the platform takes, so it is
# checked against the policy before it is stored (the review UI and any other client call this):
# a contradictory decision ("HATE, allow" without saying why) is refused, not recorded.

# Why a violation may stay up: the reviewer must name one of these to allow a violating category.
EXCEPTION_REASONS: dict[str, str] = {
    "news_or_education": "newsworthy, documentary or educational context",
    "satire_or_art": "satire, art or fiction",
    "counter_speech": "condemns or counters the violation it shows",
    "policy_exception": "an exception the policy text itself makes",
}
# Every reason code an override may carry (the exception reasons included).
REASON_CODES: dict[str, str] = {
    "wrong_category": "the model named the wrong category",
    "not_violating": "nothing in the video violates the policy",
    "missed_violation": "the model missed a violation",
    "too_strict": "the policy action is too strict for this case",
    "too_lenient": "the policy action is too lenient for this case",
    "needs_context": "the decision depends on context the model lacked",
    **EXCEPTION_REASONS,
    "policy_gap": "the policy does not cover this case",
    "other": "other (say why in the note)",
}
# What a reviewer may decide: 'review' would hand the item back to a human, so it is not a decision.
FINAL_DECISIONS = (Decision.ALLOW, Decision.RESTRICT, Decision.BLOCK)


def check_decision(policy: Policy, category: str, decision: Decision | str | None, reason_code: str) -> Decision:
    """Validate a reviewer's decision against the policy; returns the decision (the policy action when None).

    Raises:
        InputError: the category is unknown; the decision is not allow/restrict/block; the benign class
            is restricted or blocked; or a violating category is allowed without an exception reason
            (one of :data:`EXCEPTION_REASONS`).
    """
    cat = policy.find(category) if category else None
    if cat is None:
        raise InputError(
            f"unknown category {category!r}: pick one of policy {policy.version} ({', '.join(policy.codes())})"
        )
    try:
        chosen = cat.action if decision is None or str(decision) == "" else Decision(decision)
    except ValueError:
        raise InputError(f"unknown decision {decision!r}: use allow, restrict or block") from None
    if chosen not in FINAL_DECISIONS:
        raise InputError(
            f"'{chosen}' is not a decision a reviewer can record: choose allow, restrict or block "
            "(to leave the item to someone else, skip it)"
        )
    if cat.code == policy.benign and chosen is not Decision.ALLOW:
        raise InputError(
            f"{cat.code} is the benign class and is always allowed: to {chosen} this video, "
            "name the category it violates"
        )
    if cat.code != policy.benign and chosen is Decision.ALLOW and reason_code not in EXCEPTION_REASONS:
        raise InputError(
            f"{cat.code} is a violation (policy action: {cat.action}); allowing it needs an exception reason "
            f"({', '.join(EXCEPTION_REASONS)}). If nothing violates the policy, choose {policy.benign} instead"
        )
    return chosen


def decision_event_id(sample_id: str, verdict_id: int, author: str, amendment: str = "") -> str:
    """The event id of a reviewer's decision on one verdict of a sample.

    The first decision of a reviewer on a verdict has a fixed id, so the store's unique ``event_id``
    keeps it to one per item, reviewer and verdict even when two requests race (a double click, two
    app instances). An amendment gets its own id (``amendment`` is its time stamp).
    """
    key = f"{sample_id}|{verdict_id}|{author}|{amendment}"
    prefix = "amend-" if amendment else "decision-"
    return prefix + hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]


def prior_decision(store: Store, sample_id: str, verdict_id: int, author: str) -> FeedbackEvent | None:
    """The decision ``author`` already recorded on this verdict of the sample, if any."""
    t = store.table("feedback")
    query = store.sa.select(t).where(t.c.event_id == decision_event_id(sample_id, verdict_id, author))
    with store.engine.connect() as conn:
        row = conn.execute(query).first()
    return event_from_row(dict(row._mapping)) if row is not None else None


def record_decision(
    store: Store,
    policy: Policy,
    *,
    sample_id: str,
    verdict_id: int,
    author: str,
    category: str,
    decision: Decision | str | None,
    reason_code: str,
    note: str = "",
    source: str = "",
    amend: bool = False,
) -> FeedbackEvent:
    """Validate and store a reviewer decision on verdict ``verdict_id``; returns the stored event.

    One decision per item, reviewer and verdict: a second one is refused unless ``amend`` is set
    (the amendment is stored as a new event; history is never rewritten).

    Raises:
        InputError: the decision contradicts the policy (see :func:`check_decision`), or the reviewer
            already decided this verdict and did not ask to amend.
    """
    chosen = check_decision(policy, category, decision, reason_code)
    now = datetime.now(UTC)
    first_id = decision_event_id(sample_id, verdict_id, author)
    event_id = first_id
    if amend and prior_decision(store, sample_id, verdict_id, author) is not None:
        event_id = decision_event_id(sample_id, verdict_id, author, amendment=now.isoformat())
    reason = reason_code + (f": {note.strip()}" if note.strip() else "")
    event = FeedbackEvent(
        sample_id=sample_id,
        kind=FeedbackKind.REVIEWER_DECISION,
        category=category,
        decision=chosen,
        reason=reason,
        author=author,
        created_at=now,
        event_id=event_id,
        source=source,
    ).resolved(policy)
    try:
        stored = add_feedback(store, event, policy)
    except store.sa.exc.IntegrityError:
        stored = False  # a concurrent request inserted the same decision id first
    if not stored:
        before = prior_decision(store, sample_id, verdict_id, author)
        what = f"{before.category} / {before.decision}" if before is not None else "a decision"
        raise InputError(
            f"{author} already recorded {what} on this verdict of {sample_id}: amend it explicitly "
            "('amend' in the review app) to record a new one"
        )
    return event
