"""The hash bank: known videos (their PDQ frame hashes) with the decision a person took on them.

Entries live in the feedback store (tables ``bank_entries`` and ``bank_hashes``, store migration
``m005_hash_bank``). An entry holds a video's frame hashes (:mod:`kuaimod_open.ingest.pdq`), the
category and decision, where it came from (``source``: ``cli``, ``review:<event id>``,
``import:<file>``), who added it (``author``), when, and whether it is retired. Retired entries
never match; they stay for the audit trail.

Entries come from three places:

* ``kuaimod bank add VIDEO... --category CODE --decision DECISION`` (:func:`add_entry`);
* a reviewer decision that blocks or restricts (:func:`sync_labels`, called by ``add_feedback`` and
  ``import_feedback`` in :mod:`kuaimod_open.loop.feedback`): the sample's stored hashes are banked, unless the
  policy's ``match.auto_bank`` is off or the category is in ``match.no_auto_bank``; a later label of
  the same sample (a relabel) retires the entry (and banks the new decision if it blocks/restricts);
* ``kuaimod bank import FILE`` (:func:`import_bank`), the interchange format below.

Interchange (``kuaimod bank export`` / ``import``), following ThreatExchange / HMA conventions:

* **CSV**, one row per frame: ``entry_id, signal_type, signal_str, quality, timestamp, category,
  decision, source, author, created_at, note, retired``; ``signal_type`` is ``pdq`` and
  ``signal_str`` the 64-hex PDQ hash (ThreatExchange's ``pdq`` signal); rows sharing an
  ``entry_id`` are one video, their metadata must agree.
* **JSONL**, one line per video: the same metadata plus ``signal_type: "vpdq"``, ``fps`` and
  ``signal_str``, a list of ``"pdqHex,quality,timestamp"`` strings (pytx's ``vpdq`` signal).

Importing validates the whole file (hashes, categories against the policy, decisions) before it
inserts anything; an ``entry_id`` already in the bank is skipped, so re-importing changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kuaimod_open.errors import ConfigError, InputError
from kuaimod_open.first_stage.match import BankEntry, BankIndex
from kuaimod_open.ingest.pdq import FrameHash, VideoHashes
from kuaimod_open.judge.policy import Decision, Policy
from kuaimod_open.loop.store import Store

BANK_DECISIONS = (Decision.BLOCK, Decision.RESTRICT, Decision.REVIEW)
CSV_COLUMNS = (
    "entry_id",
    "signal_type",
    "signal_str",
    "quality",
    "timestamp",
    "category",
    "decision",
    "source",
    "author",
    "created_at",
    "note",
    "retired",
)


def _now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- writing


def add_entry(
    store: Store,
    hashes: VideoHashes,
    *,
    category: str,
    decision: Decision | str,
    policy: Policy,
    source: str,
    author: str,
    sample_id: str | None = None,
    video: str | None = None,
    note: str = "",
    entry_id: str | None = None,
    created_at: datetime | None = None,
    retired_at: datetime | None = None,
) -> str | None:
    """Bank a video; returns its entry id, or None when an entry with ``entry_id`` already exists.

    Raises:
        InputError: the category is not a violation of ``policy``, the decision cannot be banked
            (allow), or the video has no frame good enough to match on.
    """
    code = _violation_code(category, policy)
    try:
        verdict = Decision(decision)
    except ValueError:
        raise InputError(f"unknown decision '{decision}' (use block, restrict or review)") from None
    if verdict not in BANK_DECISIONS:
        raise InputError(f"a bank entry's decision must be block, restrict or review, not '{verdict}'")
    if not hashes.usable():
        raise InputError(
            f"{video or sample_id or 'the video'}: no frame of quality >= 50 to bank (a blank or flat video)"
        )
    entry_id = entry_id or "bk-" + uuid.uuid4().hex[:20]
    entries, rows = store.table("bank_entries"), store.table("bank_hashes")
    with store.begin() as conn:
        if conn.execute(store.sa.select(entries.c.id).where(entries.c.id == entry_id)).first() is not None:
            return None
        conn.execute(
            entries.insert().values(
                id=entry_id,
                sample_id=sample_id,
                video=video,
                category=code,
                decision=str(verdict),
                source=source,
                author=author,
                note=note,
                fps=hashes.fps,
                duration=hashes.duration,
                created_at=created_at or _now(),
                retired_at=retired_at,
            )
        )
        conn.execute(
            rows.insert(),
            [
                {
                    "entry_id": entry_id,
                    "position": i,
                    "timestamp": f.timestamp,
                    "quality": f.quality,
                    "pdq": f.pdq,
                    "mirror": f.mirror,
                }
                for i, f in enumerate(hashes.frames)
            ],
        )
    return entry_id


def retire(store: Store, *, entry_id: str | None = None, sample_id: str | None = None, by: str, reason: str) -> int:
    """Retire the active entry ``entry_id`` (or every active entry of ``sample_id``); returns how many."""
    if (entry_id is None) == (sample_id is None):
        raise ValueError("retire needs exactly one of entry_id and sample_id")
    t = store.table("bank_entries")
    where = t.c.id == entry_id if entry_id is not None else t.c.sample_id == sample_id
    with store.begin() as conn:
        result = conn.execute(
            t.update()
            .where(where, t.c.retired_at.is_(None))
            .values(retired_at=_now(), retired_by=by, retired_reason=reason)
        )
        return int(result.rowcount or 0)


def _violation_code(category: str, policy: Policy) -> str:
    found = policy.find(category)
    if found is None or found.code == policy.benign:
        raise InputError(
            f"bank category '{category}' is not a violation category of policy {policy.version} "
            f"(use one of: {', '.join(c.code for c in policy.violations)})"
        )
    return found.code


def stored_hashes(store: Store, sample_id: str) -> VideoHashes | None:
    """The hashes recorded with a sample in the store (None when it has none)."""
    t = store.table("samples")
    with store.engine.connect() as conn:
        raw = conn.execute(store.sa.select(t.c.hashes).where(t.c.id == sample_id)).scalar()
    return VideoHashes.model_validate_json(raw) if raw else None


def sync_labels(store: Store, sample_ids: Sequence[str], policy: Policy) -> list[str]:
    """Bring the bank in step with the current human label of each sample; returns new entry ids.

    For each sample, its latest reviewer decision or appeal outcome is the label. Active entries of
    the sample that disagree with it are retired (a relabel); a label that blocks or restricts banks
    the sample's stored hashes, unless the policy turns automatic banking off (``match.auto_bank``,
    or the category in ``match.no_auto_bank``). Reconciling from the current label, not from the
    event, makes it idempotent: re-importing an old decision never re-banks what a relabel retired.
    Only samples with stored hashes or active entries are looked at (cheap for bulk imports).
    """
    if not sample_ids:
        return []
    sa = store.sa
    samples, entries_t, feedback = store.table("samples"), store.table("bank_entries"), store.table("feedback")
    wanted: set[str] = set()
    with store.engine.connect() as conn:
        for start in range(0, len(sample_ids), 500):
            chunk = list(sample_ids[start : start + 500])
            query = sa.select(samples.c.id).where(samples.c.id.in_(chunk), samples.c.hashes.is_not(None))
            wanted.update(r[0] for r in conn.execute(query))
            query = sa.select(entries_t.c.sample_id).where(
                entries_t.c.sample_id.in_(chunk), entries_t.c.retired_at.is_(None)
            )
            wanted.update(r[0] for r in conn.execute(query))
        latest: dict[str, Any] = {}
        ordered = sorted(wanted)
        for start in range(0, len(ordered), 500):
            query = (
                sa.select(feedback)
                .where(
                    feedback.c.sample_id.in_(ordered[start : start + 500]),
                    feedback.c.kind.in_(["reviewer_decision", "appeal_outcome"]),
                )
                .order_by(feedback.c.id)
            )
            for row in conn.execute(query):
                latest[row.sample_id] = row
    return [e for sid in ordered if sid in latest and (e := _reconcile(store, latest[sid], policy)) is not None]


def _reconcile(store: Store, label: Any, policy: Policy) -> str | None:
    t = store.table("bank_entries")
    with store.engine.connect() as conn:
        active = conn.execute(
            store.sa.select(t.c.id, t.c.category, t.c.decision).where(
                t.c.sample_id == label.sample_id, t.c.retired_at.is_(None)
            )
        ).all()
    same = [r for r in active if r.category == label.category and r.decision == label.decision]
    for row in active:
        if row not in same:
            retire(store, entry_id=row.id, by=label.author, reason=f"relabelled {label.category}/{label.decision}")
    settings = policy.matching
    if same or label.decision not in (Decision.BLOCK, Decision.RESTRICT) or label.category is None:
        return None
    if not settings.auto_bank or label.category in settings.no_auto_bank or policy.find(label.category) is None:
        return None
    hashes = stored_hashes(store, label.sample_id)
    if hashes is None or not hashes.usable():
        return None  # nothing to match on (a text-only sample, or one prepared without hashing)
    return add_entry(
        store,
        hashes,
        category=label.category,
        decision=label.decision,
        policy=policy,
        source=f"review:{label.event_id}",
        author=label.author,
        sample_id=label.sample_id,
        note=label.reason or "",
    )


# --------------------------------------------------------------------------- reading


def entries(store: Store, *, include_retired: bool = False) -> list[tuple[BankEntry, datetime | None]]:
    """Bank entries with their hashes (and retirement time), oldest first."""
    t, h = store.table("bank_entries"), store.table("bank_hashes")
    sa = store.sa
    query = sa.select(t).order_by(t.c.created_at, t.c.id)
    if not include_retired:
        query = query.where(t.c.retired_at.is_(None))
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
        frames: dict[str, list[FrameHash]] = {}
        wanted = [r["id"] for r in rows]
        for start in range(0, len(wanted), 500):  # bounded IN lists
            chunk = wanted[start : start + 500]
            for f in conn.execute(sa.select(h).where(h.c.entry_id.in_(chunk)).order_by(h.c.entry_id, h.c.position)):
                frames.setdefault(f.entry_id, []).append(
                    FrameHash(timestamp=f.timestamp, quality=f.quality, pdq=f.pdq, mirror=f.mirror)
                )
    out = []
    for r in rows:
        hashes = VideoHashes(fps=r["fps"], duration=r["duration"], frames=tuple(frames.get(r["id"], [])))
        entry = BankEntry(
            id=r["id"],
            category=r["category"],
            decision=Decision(r["decision"]),
            source=r["source"] or "",
            author=r["author"] or "",
            created_at=r["created_at"],
            sample_id=r["sample_id"],
            note=r["note"] or "",
            hashes=hashes,
        )
        out.append((entry, r["retired_at"]))
    return out


def load_bank(store: Store, kind: str = "auto", max_distance: int = 31) -> BankIndex:
    """The active entries in memory, ready to match (see :class:`kuaimod_open.first_stage.match.BankIndex`)."""
    return BankIndex([e for e, _ in entries(store)], kind=kind, max_distance=max_distance)


# --------------------------------------------------------------------------- interchange


class BankRecord(BaseModel):
    """One video of an interchange file (a JSONL line, or the CSV rows of one ``entry_id``)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    entry_id: str = Field(min_length=1, max_length=64)
    signal_type: str = "vpdq"
    signal_str: list[str] = Field(min_length=1, description='"pdqHex,quality,timestamp" per frame')
    category: str = Field(min_length=1)
    decision: Decision
    source: str = ""
    author: str = ""
    created_at: datetime | None = None
    note: str = ""
    fps: float = Field(default=1.0, gt=0)
    retired: bool = False

    @field_validator("signal_type")
    @classmethod
    def _vpdq(cls, value: str) -> str:
        if value not in ("vpdq", "pdq"):
            raise ValueError(f"signal_type must be 'vpdq' (JSONL) or 'pdq' (CSV rows), not {value!r}")
        return value

    def hashes(self) -> VideoHashes:
        """The frames as :class:`VideoHashes` (a bad frame string is a ValueError naming it)."""
        frames = []
        for item in self.signal_str:
            parts = [p.strip() for p in item.split(",")]
            if len(parts) != 3:
                raise ValueError(f"frame {item[:90]!r}: expected 'pdqHex,quality,timestamp'")
            try:
                frames.append(FrameHash(pdq=parts[0].lower(), quality=int(parts[1]), timestamp=float(parts[2])))
            except (ValueError, ValidationError) as exc:
                raise ValueError(f"frame {item[:90]!r}: {str(exc).splitlines()[-1][:120]}") from None
        return VideoHashes(fps=self.fps, frames=tuple(frames))


class ImportResult(NamedTuple):
    """What a bank import did."""

    read: int
    inserted: int
    duplicates: int


def _frame_str(f: FrameHash) -> str:
    return f"{f.pdq},{f.quality},{f.timestamp:.3f}"


def export_bank(store: Store, out: str | Path, *, include_retired: bool = True) -> int:
    """Write the bank as CSV (one row per frame) or JSONL (one line per video), by ``out``'s suffix."""
    out = Path(out)
    rows = entries(store, include_retired=include_retired)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise ConfigError(f"{out}: bank files are .csv or .jsonl")
    with out.open("w", encoding="utf-8", newline="") as handle:
        if suffix == ".csv":
            writer = csv.DictWriter(handle, fieldnames=list(CSV_COLUMNS))
            writer.writeheader()
            for entry, retired in rows:
                meta = _meta(entry, retired)
                for f in entry.hashes.frames:
                    frame = {"signal_type": "pdq", "signal_str": f.pdq, "quality": f.quality, "timestamp": f.timestamp}
                    writer.writerow({**meta, **frame})
        else:
            for entry, retired in rows:
                record = {
                    **_meta(entry, retired),
                    "signal_type": "vpdq",
                    "fps": entry.hashes.fps,
                    "signal_str": [_frame_str(f) for f in entry.hashes.frames],
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(rows)


def _meta(entry: BankEntry, retired: datetime | None) -> dict[str, Any]:
    return {
        "entry_id": entry.id,
        "category": entry.category,
        "decision": str(entry.decision),
        "source": entry.source,
        "author": entry.author,
        "created_at": entry.created_at.isoformat() if entry.created_at else "",
        "note": entry.note,
        "retired": retired is not None,
    }


def read_bank_file(path: str | Path) -> list[BankRecord]:
    """Validate a CSV or JSONL bank file; every bad row is reported with its line number."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Bank file not found: {path}")
    problems: list[str] = []
    records: list[BankRecord] = []
    if path.suffix.lower() == ".csv":
        grouped: dict[str, tuple[int, dict[str, Any], list[str]]] = {}
        with path.open(encoding="utf-8", newline="") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                entry_id = (row.get("entry_id") or "").strip()
                if not entry_id:
                    problems.append(f"{path}:{line}: entry_id: missing")
                    continue
                if (row.get("signal_type") or "pdq").strip() != "pdq":
                    problems.append(f"{path}:{line}: signal_type: CSV rows carry one 'pdq' frame hash each")
                    continue
                meta = {k: v for k, v in row.items() if k not in ("signal_type", "signal_str", "quality", "timestamp")}
                frame = f"{row.get('signal_str') or ''},{row.get('quality') or 0},{row.get('timestamp') or 0}"
                first = grouped.setdefault(entry_id, (line, meta, []))
                if first[1] != meta:
                    problems.append(f"{path}:{line}: entry {entry_id}: metadata differs from line {first[0]}")
                first[2].append(frame)
        raw: list[tuple[int, dict[str, Any]]] = [
            (line, {**{k: v for k, v in meta.items() if v not in (None, "")}, "signal_str": frames})
            for line, meta, frames in grouped.values()
        ]
    elif path.suffix.lower() == ".jsonl":
        from kuaimod_open.ingest.sample import read_jsonl

        raw = list(read_jsonl(path))
    else:
        raise ConfigError(f"{path}: bank files are .csv (a row per frame) or .jsonl (a line per video)")
    for line, obj in raw:
        try:
            record = BankRecord.model_validate(obj)
            record.hashes()
            records.append(record)
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            problems.append(f"{path}:{line}: {detail}")
        except ValueError as exc:
            problems.append(f"{path}:{line}: {exc}")
    if problems:
        raise InputError(f"{len(problems)} invalid bank row(s), nothing imported:\n  " + "\n  ".join(problems[:20]))
    return records


def import_bank(store: Store, path: str | Path, policy: Policy, *, author: str = "") -> ImportResult:
    """Validate a whole bank file, then insert its entries; entry ids already banked are skipped."""
    records = read_bank_file(path)
    problems = []
    for record in records:
        try:
            _violation_code(record.category, policy)
            if record.decision not in BANK_DECISIONS:
                raise InputError(f"decision must be block, restrict or review, not '{record.decision}'")
        except InputError as exc:
            problems.append(f"entry {record.entry_id}: {exc}")
    if problems:
        raise InputError(f"{len(problems)} invalid bank entries, nothing imported:\n  " + "\n  ".join(problems[:20]))
    inserted = 0
    for record in records:
        created = record.created_at or _now()
        added = add_entry(
            store,
            record.hashes(),
            category=record.category,
            decision=record.decision,
            policy=policy,
            source=record.source or f"import:{Path(path).name}",
            author=record.author or author,
            note=record.note,
            entry_id=record.entry_id,
            created_at=created,
            retired_at=_now() if record.retired else None,
        )
        inserted += added is not None
    return ImportResult(read=len(records), inserted=inserted, duplicates=len(records) - inserted)


def content_entry_id(hashes: VideoHashes, category: str, decision: str) -> str:
    """A stable entry id from the hashes and decision (adding the same video twice is one entry)."""
    key = "|".join([category, decision, *(f.pdq for f in hashes.frames)])
    return "bk-" + hashlib.sha256(key.encode()).hexdigest()[:20]


def matches_as_rows(found: Sequence[Any]) -> Iterable[dict[str, Any]]:
    """JSON-ready rows of :class:`kuaimod_open.first_stage.match.BankMatch` results (for the CLI)."""
    for m in found:
        yield {
            "entry_id": m.entry.id,
            "category": m.entry.category,
            "decision": str(m.entry.decision),
            "similarity": round(m.query_fraction, 4),
            "query_fraction": round(m.query_fraction, 4),
            "bank_fraction": round(m.bank_fraction, 4),
            "mirrored": m.mirrored,
            "pairs": [p.model_dump() for p in m.pairs],
        }


__all__ = [
    "CSV_COLUMNS",
    "BankRecord",
    "ImportResult",
    "add_entry",
    "content_entry_id",
    "entries",
    "export_bank",
    "import_bank",
    "load_bank",
    "matches_as_rows",
    "sync_labels",
    "read_bank_file",
    "retire",
    "stored_hashes",
]
