"""The store's Alembic migrations, run programmatically (and one at a time) when a store is opened.

``upgrade(engine)`` brings a database to the newest revision:

1. A cheap read first: a store already at the head is opened without taking any lock.
2. Otherwise it takes the **migration lock** inside one transaction: on PostgreSQL a transaction-level
   advisory lock (``pg_advisory_xact_lock``), on SQLite the database's write lock (``BEGIN IMMEDIATE``;
   waits up to the busy timeout). A second process opening the same new store waits for the first,
   then finds the head already there and does nothing, instead of creating the same tables again and
   failing.
3. A store written before Alembic (hand-rolled migrations recorded in ``schema_migrations``) is
   *adopted*: the last migration it recorded is stamped as its Alembic revision (the revision ids are
   the old names, and those revisions create the same DDL), then the newer revisions run.
4. The revisions run in that same transaction, so on PostgreSQL and SQLite (both have transactional
   DDL) a failed migration leaves the store as it was.

A store migrated by a newer kuaimod_open (a revision this package does not know) is refused with a
message, never altered.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kuaimod_open.errors import ConfigError

HERE = Path(__file__).resolve().parent
LEGACY_TABLE = "schema_migrations"
# An arbitrary 63-bit key for pg_advisory_xact_lock: "kuaimod" migrations.
PG_LOCK_KEY = 0x6B75616D6F64


def include_name(name: str | None, type_: str, _parent: Any) -> bool:
    """What Alembic compares with the models: everything but the pre-Alembic record.

    ``schema_migrations`` stays in adopted stores (a downgraded kuaimod_open still reads it) and is
    not part of the declared schema.
    """
    return not (type_ == "table" and name == LEGACY_TABLE)


def drift(conn: Any) -> list[Any]:
    """Differences between the connected database and the declared models (empty when they agree)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from kuaimod_open.loop.schema import metadata

    context = MigrationContext.configure(conn, opts={"include_name": include_name})
    return list(compare_metadata(context, metadata))


def _config(connection: Any = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _script() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


def head() -> str:
    """The newest revision this package knows."""
    return str(_script().get_current_head())


def revisions() -> list[str]:
    """Every revision id, oldest first."""
    return [str(s.revision) for s in reversed(list(_script().walk_revisions()))]


def current(conn: Any) -> str | None:
    """The revision a connected database is at (None: no Alembic version recorded)."""
    from alembic.runtime.migration import MigrationContext

    value = MigrationContext.configure(conn).get_current_revision()
    return None if value is None else str(value)


def chain(rev: str | None) -> list[str]:
    """Revisions from the base up to and including ``rev``."""
    if rev is None:
        return []
    order = revisions()
    return order[: order.index(rev) + 1]


def _legacy_revision(conn: Any) -> str | None:
    """For a pre-Alembic store, the last hand-rolled migration it recorded (None when it has none)."""
    import sqlalchemy as sa

    if not sa.inspect(conn).has_table(LEGACY_TABLE):
        return None
    names = {row[0] for row in conn.execute(sa.text(f"SELECT name FROM {LEGACY_TABLE}"))}
    known = [rev for rev in revisions() if rev in names]
    unknown = names.difference(revisions())
    if unknown:
        raise ConfigError(
            f"this store records migrations this kuaimod_open does not know ({', '.join(sorted(unknown))}); "
            "open it with the version that wrote it"
        )
    # The old runner applied them strictly in order, so the recorded ones form a prefix.
    return known[-1] if known else None


@contextmanager
def _migration_lock(engine: Any) -> Iterator[Any]:
    """A connection in a transaction that holds the store-wide migration lock until it commits."""
    import sqlalchemy as sa

    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
            yield conn


def upgrade(engine: Any, target: str = "head") -> list[str]:
    """Migrate the database behind ``engine`` to ``target``; return the revisions applied now."""
    from alembic import command

    wanted = head() if target == "head" else target
    if wanted not in revisions():
        raise ConfigError(f"unknown store revision {target!r} (known: {', '.join(revisions())})")
    with engine.connect() as conn:
        if current(conn) == wanted:
            return []
    with _migration_lock(engine) as conn:
        now = current(conn)
        if now is None:
            now = _legacy_revision(conn)
            if now is not None:
                command.stamp(_config(conn), now)
        if now is not None and now not in revisions():
            raise ConfigError(
                f"this store is at schema revision {now!r}, newer than this kuaimod_open knows "
                f"(newest: {head()}): upgrade kuaimod_open before opening it"
            )
        before = chain(now)
        if wanted in before:  # already at or past the target
            return []
        command.upgrade(_config(conn), wanted)
        return [rev for rev in chain(wanted) if rev not in before]
