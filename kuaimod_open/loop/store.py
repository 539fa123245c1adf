"""The feedback store: samples, verdicts, feedback events, precedents, versioned artefacts, gate decisions.

SQLAlchemy Core over an embedded SQLite file by default (``sqlite:///kuaimod.db``); a team points
``--db`` at PostgreSQL (``postgresql+psycopg://user@host/db``) and gets the same schema. History is
append-only: verdicts and feedback are only ever inserted; "the current label of a sample" is a
query over its events.

The tables are declared in :mod:`kuaimod_open.loop.schema` and created and upgraded by the Alembic
revisions in :mod:`kuaimod_open.loop.migrations`, which run (serialised across processes) when a
store is opened; an older file, including one written before Alembic, is upgraded in place without
losing data. To add a table: declare it in ``schema.py`` and add a revision under
``loop/migrations/versions/`` whose ``down_revision`` is the current head (see that package's
docstring); ``tests/test_store_schema.py`` fails until the two agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from kuaimod_open._lazy import require
from kuaimod_open.errors import ConfigError

DEFAULT_DB = "sqlite:///kuaimod.db"


def _now() -> datetime:
    return datetime.now(UTC)


def copy_to_temp(conn: Any, table: str, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """PostgreSQL bulk path: COPY ``rows`` into a temporary twin of ``table``; returns its name.

    The twin (``<table>_in``: the table's columns plus ``copy_seq``, the input order) lives for the
    session and is emptied at commit; the caller moves the rows on with one INSERT ... SELECT (ON
    CONFLICT ...) and deletes them. COPY is the fast path: psycopg spends seconds turning a large
    parameterised INSERT into a query, and executemany pays a round trip per row.
    """
    raw = conn.connection.dbapi_connection  # the psycopg connection of this transaction
    temp = f"{table}_in"
    with raw.cursor() as cur:
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {temp} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        cur.execute(f"ALTER TABLE {temp} ADD COLUMN IF NOT EXISTS copy_seq integer")
        with cur.copy(f"COPY {temp} (copy_seq, {', '.join(columns)}) FROM STDIN") as copy:
            for seq, row in enumerate(rows):
                copy.write_row((seq, *(row[c] for c in columns)))
    return temp


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
        if self.engine.dialect.name == "sqlite":
            self._tune_sqlite()
        from kuaimod_open.loop import schema  # imports sqlalchemy: only once the extra is known to be there

        self.metadata = schema.metadata
        self.cache: dict[str, Any] = {}  # per-process derived data (e.g. the queue's policy); never persisted
        if migrate:
            self.migrate(until=until)

    @classmethod
    def describing(cls, engine: Any) -> Store:
        """A store over an engine that is already set up (a migration's), neither tuned nor migrated.

        Revisions use it to call the store's own functions on their connection.
        """
        from kuaimod_open.loop import schema

        store = cls.__new__(cls)
        store.sa = require("sqlalchemy", extra="store", purpose="the feedback store")
        store.url, store.engine, store.metadata, store.cache = str(engine.url), engine, schema.metadata, {}
        return store

    def _tune_sqlite(self) -> None:
        sa = self.sa

        @sa.event.listens_for(self.engine, "connect")  # type: ignore[untyped-decorator]  # sqlalchemy is untyped here
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # busy_timeout first, so that even switching a new file to WAL waits for a concurrent opener
            # instead of failing; WAL lets the review UI read while a batch job writes.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
            # The driver's own transaction handling does not cover DDL and starts transactions lazily;
            # switch it off and emit BEGIN ourselves (SQLAlchemy's documented recipe for pysqlite), so
            # migrations are transactional and writers can take the write lock up front.
            dbapi_conn.isolation_level = None

        @sa.event.listens_for(self.engine, "begin")  # type: ignore[untyped-decorator]
        def _begin(conn: Any) -> None:
            # Writers (Store.begin, migrations) ask for IMMEDIATE: the write lock is taken at BEGIN, where
            # busy_timeout applies. A deferred transaction that read first and then writes can fail at
            # once with "database is locked" when another writer committed in between.
            conn.exec_driver_sql("BEGIN " + str(conn.get_execution_options().get("sqlite_begin", "")))

    def migrate(self, until: str | None = None) -> list[str]:
        """Apply pending migrations (up to and including revision ``until``); return the revisions applied.

        Serialised across processes (see :mod:`kuaimod_open.loop.migrations`). ``until`` is for
        migration tests: the declared tables (:meth:`table`) describe the newest schema.
        """
        from kuaimod_open.loop import migrations

        return migrations.upgrade(self.engine, until or "head")

    def applied_migrations(self) -> list[str]:
        """The schema revisions this database has, oldest first."""
        from kuaimod_open.loop import migrations

        with self.engine.connect() as conn:
            return migrations.chain(migrations.current(conn))

    def table(self, name: str) -> Any:
        """The declared table ``name`` (:mod:`kuaimod_open.loop.schema`)."""
        return self.metadata.tables[name]

    @contextmanager
    def begin(self) -> Iterator[Any]:
        """A write transaction (on SQLite it holds the write lock from the start)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
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
