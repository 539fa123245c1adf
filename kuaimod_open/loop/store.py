"""The feedback store: samples, verdicts, feedback events, precedents, versioned artefacts, gate decisions.

SQLAlchemy Core over an embedded SQLite file by default (``sqlite:///kuaimod.db``); a team points
``--db`` at PostgreSQL (``postgresql+psycopg://user@host/db``) and gets the same schema. History is
append-only: verdicts and feedback are only ever inserted; "the current label of a sample" is a
query over its events. The schema grows through a recorded list of named migrations, so an older
file is upgraded in place without losing data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from kuaimod_open._lazy import require
from kuaimod_open.errors import ConfigError

DEFAULT_DB = "sqlite:///kuaimod.db"


def _now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- migrations
# Each migration is a named function applied once, in order, inside a transaction. Never edit a
# published migration: append a new one.

Migration = Callable[[Any, Any], None]  # (sqlalchemy module, connection)
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(name: str) -> Callable[[Migration], Migration]:
    """Register a schema migration under a stable name."""

    def register(func: Migration) -> Migration:
        MIGRATIONS.append((name, func))
        return func

    return register


@migration("m001_initial")
def _m001(sa: Any, conn: Any) -> None:
    md = sa.MetaData()
    text, ts, integer, real = sa.Text, sa.DateTime(timezone=True), sa.Integer, sa.Float
    sa.Table(
        "samples", md,
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("title", text, nullable=False, default=""),
        sa.Column("ocr", text, nullable=False, default=""),
        sa.Column("asr", text, nullable=False, default=""),
        sa.Column("comments", text, nullable=False, default="[]"),
        sa.Column("video", text), sa.Column("frames", text, nullable=False, default="[]"),
        sa.Column("label", sa.String(64)),
        sa.Column("created_at", ts, nullable=False),
    )  # fmt: skip
    sa.Table(
        "verdicts", md,
        sa.Column("id", integer, primary_key=True, autoincrement=True),
        sa.Column("sample_id", sa.String(200), nullable=False, index=True),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("category", sa.String(64)),
        sa.Column("confidence", real),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("model", text, nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("policy_digest", sa.String(32), nullable=False),
        sa.Column("payload", text, nullable=False),
        sa.Column("created_at", ts, nullable=False),
    )  # fmt: skip
    sa.Table(
        "feedback", md,
        sa.Column("id", integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("sample_id", sa.String(200), nullable=False, index=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("category", sa.String(64)),
        sa.Column("decision", sa.String(16)),
        sa.Column("reason", text, nullable=False, default=""),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("created_at", ts, nullable=False),
    )  # fmt: skip
    sa.Table(
        "precedents", md,
        sa.Column("id", integer, primary_key=True, autoincrement=True),
        sa.Column("sample_id", sa.String(200), nullable=False, index=True),
        sa.Column("feedback_id", integer),
        sa.Column("text", text, nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reason", text, nullable=False, default=""),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("embedding", sa.LargeBinary),
        sa.Column("retired_at", ts),
        sa.Column("created_at", ts, nullable=False),
    )  # fmt: skip
    # Versioned artefacts: policy files, routers, LoRA adapters (kuaimod_open.loop.registry).
    sa.Table(
        "models", md,
        sa.Column("id", integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("path", text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("meta", text, nullable=False, default="{}"),
        sa.Column("created_at", ts, nullable=False),
    )  # fmt: skip
    sa.Table(
        "gate_decisions", md,
        sa.Column("id", integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("candidate", text, nullable=False),
        sa.Column("baseline", text, nullable=False),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("details", text, nullable=False),
        sa.Column("created_at", ts, nullable=False),
    )  # fmt: skip
    sa.Table(
        "watermarks", md,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", integer, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
    )  # fmt: skip
    md.create_all(conn)


@migration("m002_verdict_adapter_and_prompt")
def _m002(sa: Any, conn: Any) -> None:
    # Verdict provenance grew: adapters and prompt digests are queried by the gate and the UI.
    conn.execute(sa.text("ALTER TABLE verdicts ADD COLUMN adapter TEXT"))
    conn.execute(sa.text("ALTER TABLE verdicts ADD COLUMN prompt_digest VARCHAR(32)"))


@migration("m003_feedback_source")
def _m003(sa: Any, conn: Any) -> None:
    # Where an event came from (import file, review UI, API): needed to audit imports.
    conn.execute(sa.text("ALTER TABLE feedback ADD COLUMN source VARCHAR(200) DEFAULT ''"))


@migration("m004_review_audit")
def _m004(sa: Any, conn: Any) -> None:
    # The review UI's audit trail: who did what, when (decisions, reveals, policy saves, rollbacks).
    md = sa.MetaData()
    sa.Table(
        "review_audit", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("sample_id", sa.String(200), index=True),
        sa.Column("detail", sa.Text, nullable=False, default="{}"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )  # fmt: skip
    md.create_all(conn)


@migration("m005_hash_bank")
def _m005(sa: Any, conn: Any) -> None:
    # Known-content matching: banked videos and their frame hashes; the sample's own hashes are kept
    # with it so a reviewer's block can bank the video without decoding it again.
    md = sa.MetaData()
    ts = sa.DateTime(timezone=True)
    sa.Table(
        "bank_entries", md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("sample_id", sa.String(200), index=True),
        sa.Column("video", sa.Text),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("source", sa.String(200), nullable=False, default=""),
        sa.Column("author", sa.String(200), nullable=False, default=""),
        sa.Column("note", sa.Text, nullable=False, default=""),
        sa.Column("fps", sa.Float, nullable=False),
        sa.Column("duration", sa.Float),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("retired_at", ts),
        sa.Column("retired_by", sa.String(200)),
        sa.Column("retired_reason", sa.Text),
    )  # fmt: skip
    sa.Table(
        "bank_hashes", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("entry_id", sa.String(64), nullable=False, index=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("timestamp", sa.Float, nullable=False),
        sa.Column("quality", sa.Integer, nullable=False),
        sa.Column("pdq", sa.String(64), nullable=False),
        sa.Column("mirror", sa.String(64)),
    )  # fmt: skip
    md.create_all(conn)
    conn.execute(sa.text("ALTER TABLE samples ADD COLUMN hashes TEXT"))


# --------------------------------------------------------------------------- the store


class Store:
    """A connection to the feedback database, migrated to the latest schema on open."""

    def __init__(self, url: str = DEFAULT_DB, *, migrate: bool = True, until: str | None = None) -> None:
        self.sa = require("sqlalchemy", extra="store", purpose="the feedback store")
        self.url = url
        try:
            self.engine = self.sa.create_engine(url, future=True)
        except Exception as exc:  # bad URL or missing DB driver: SQLAlchemy raises several types
            raise ConfigError(
                f"Cannot open database {url!r}: {exc}. Use sqlite:///path/to/kuaimod.db, or "
                "postgresql+psycopg://user:pass@host/db with `pip install psycopg`."
            ) from None
        if url.startswith("sqlite"):
            self._tune_sqlite()
        self.metadata = self.sa.MetaData()
        if migrate:
            self.migrate(until=until)

    def _tune_sqlite(self) -> None:
        sa = self.sa

        @sa.event.listens_for(self.engine, "connect")  # type: ignore[untyped-decorator]  # sqlalchemy is untyped here
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the review UI read while a batch job writes; busy_timeout makes concurrent
            # writers wait for the lock instead of failing at once.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    def migrate(self, until: str | None = None) -> list[str]:
        """Apply pending migrations (up to and including ``until``); return the names applied."""
        sa = self.sa
        applied_now = []
        with self.engine.begin() as conn:
            conn.execute(
                sa.text("CREATE TABLE IF NOT EXISTS schema_migrations (name VARCHAR(100) PRIMARY KEY, applied_at TEXT)")
            )
            done = {row[0] for row in conn.execute(sa.text("SELECT name FROM schema_migrations"))}
        for name, func in MIGRATIONS:
            if name not in done:
                with self.engine.begin() as conn:
                    func(sa, conn)
                    conn.execute(
                        sa.text("INSERT INTO schema_migrations (name, applied_at) VALUES (:n, :t)"),
                        {"n": name, "t": _now().isoformat()},
                    )
                applied_now.append(name)
            if name == until:
                break
        self.metadata = self.sa.MetaData()
        self.metadata.reflect(self.engine)
        return applied_now

    def applied_migrations(self) -> list[str]:
        """Names of the migrations this database has, in order."""
        with self.engine.connect() as conn:
            return [
                r[0] for r in conn.execute(self.sa.text("SELECT name FROM schema_migrations ORDER BY applied_at, name"))
            ]

    def table(self, name: str) -> Any:
        """The reflected table ``name``."""
        return self.metadata.tables[name]

    @contextmanager
    def begin(self) -> Iterator[Any]:
        """A transaction."""
        with self.engine.begin() as conn:
            yield conn

    # ------------------------------------------------------------------ watermarks

    def watermark(self, name: str) -> int:
        """The last id an updater consumed (0 when it never ran)."""
        t = self.table("watermarks")
        with self.engine.connect() as conn:
            value = conn.execute(self.sa.select(t.c.value).where(t.c.name == name)).scalar()
        return int(value or 0)

    def set_watermark(self, name: str, value: int) -> None:
        """Record what an updater consumed, so a cron re-run does not redo it."""
        t = self.table("watermarks")
        with self.begin() as conn:
            updated = conn.execute(t.update().where(t.c.name == name).values(value=value, updated_at=_now())).rowcount
            if not updated:
                conn.execute(t.insert().values(name=name, value=value, updated_at=_now()))

    def dump_json(self, value: Any) -> str:
        """JSON text for TEXT columns."""
        return json.dumps(value, ensure_ascii=False, default=str)
