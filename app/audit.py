"""The review audit trail: every action in the UI, with the reviewer's name and the time."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from kuaimod_open.loop.store import Store

AUDIT_HEADERS = ["time (UTC)", "reviewer", "action", "sample", "detail"]


def log_action(store: Store, actor: str, action: str, sample_id: str | None = None, **detail: Any) -> int:
    """Append one audit row (never updated or deleted); returns its id."""
    t = store.table("review_audit")
    with store.begin() as conn:
        row = conn.execute(
            t.insert().values(
                actor=actor,
                action=action,
                sample_id=sample_id,
                detail=store.dump_json(detail),
                created_at=datetime.now(UTC),
            )
        )
        return int(row.inserted_primary_key[0])


def audit_rows(store: Store, *, sample_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """The newest audit rows first (optionally for one sample)."""
    t = store.table("review_audit")
    query = store.sa.select(t).order_by(t.c.id.desc()).limit(limit)
    if sample_id is not None:
        query = query.where(t.c.sample_id == sample_id)
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
    for row in rows:
        row["detail"] = json.loads(row["detail"] or "{}")
    return rows


def audit_table(store: Store, *, sample_id: str | None = None, limit: int = 200) -> list[list[str]]:
    """Audit rows as display rows for a table."""
    out = []
    for row in audit_rows(store, sample_id=sample_id, limit=limit):
        when = row["created_at"]
        stamp = when.strftime("%Y-%m-%d %H:%M:%S") if isinstance(when, datetime) else str(when)
        detail = ", ".join(f"{k}={v}" for k, v in row["detail"].items() if v not in (None, ""))
        out.append([stamp, row["actor"], row["action"], row["sample_id"] or "", detail])
    return out
