"""The store's schema: Alembic revisions match the declared models, old stores upgrade without loss, and
migrations are serialised across processes (SQLite and PostgreSQL)."""

from __future__ import annotations

import multiprocessing as mp
import shutil
from pathlib import Path

import pytest

sa = pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

from kuaimod_open.errors import ConfigError  # noqa: E402
from kuaimod_open.loop import migrations  # noqa: E402
from kuaimod_open.loop.feedback import current_labels, latest_verdicts  # noqa: E402
from kuaimod_open.loop.store import Store  # noqa: E402

LEGACY = Path(__file__).parent / "data" / "legacy_store"
# What tests/data/legacy_store holds (written by the pre-Alembic code, see its README).
LEGACY_ROWS = {
    "samples": 12,
    "verdicts": 12,
    "feedback": 5,
    "precedents": 1,
    "models": 1,
    "gate_decisions": 0,
    "watermarks": 1,
    "review_audit": 1,
}


def _load_legacy(url: str, tmp_path: Path) -> str:
    """Put the pre-Alembic store behind ``url`` (a copy of the SQLite file, or the PostgreSQL dump)."""
    if url.startswith("sqlite"):
        target = tmp_path / "legacy.db"
        shutil.copy(LEGACY / "m004.sqlite", target)
        return f"sqlite:///{target}"
    engine = sa.create_engine(url)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute((LEGACY / "m004_postgres.sql").read_text(encoding="utf-8"))
        raw.commit()
    finally:
        raw.close()
        engine.dispose()
    return url


def _counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in LEGACY_ROWS}


def _schema_diff(store: Store) -> list[object]:
    with store.engine.connect() as conn:
        return migrations.drift(conn)


def test_a_pre_alembic_store_is_adopted_and_upgraded_without_data_loss(db_url, tmp_path):
    url = _load_legacy(db_url, tmp_path)
    with sa.create_engine(url).connect() as conn:  # as the old code left it
        assert conn.execute(sa.text("SELECT count(*) FROM schema_migrations")).scalar_one() == 4
    store = Store(url)
    assert store.applied_migrations() == migrations.revisions()
    assert _counts(store) == LEGACY_ROWS
    verdicts = latest_verdicts(store)
    assert len(verdicts) == 12 and verdicts["legacy-11"][1].status == "error"
    labels = current_labels(store)
    assert labels["legacy-02"].category == "HATE" and labels["legacy-02"].kind == "appeal_outcome"
    assert store.watermark("update_policy") == 3
    assert _schema_diff(store) == []
    assert Store(url).migrate() == []  # idempotent


def test_a_new_store_matches_the_declared_models(db_url):
    store = Store(db_url)
    assert store.applied_migrations() == migrations.revisions()
    assert _schema_diff(store) == []


def test_migrations_can_stop_at_a_revision_and_continue(db_url):
    first = migrations.revisions()[0]
    old = Store(db_url, until=first)
    assert old.applied_migrations() == [first]
    columns = {c["name"] for c in sa.inspect(old.engine).get_columns("verdicts")}
    assert "adapter" not in columns
    old.engine.dispose()
    assert Store(db_url).migrate() == [] and Store(db_url).applied_migrations() == migrations.revisions()


def test_a_store_from_a_newer_release_is_refused_untouched(db_url):
    store = Store(db_url)
    with store.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'm999_from_the_future'"))
    with pytest.raises(ConfigError, match="newer than this kuaimod_open knows"):
        Store(db_url)


def _open(url: str, barrier: object, out: object) -> None:
    from kuaimod_open.loop.store import Store

    barrier.wait()  # type: ignore[attr-defined]
    try:
        out.put(("ok", Store(url).applied_migrations()))  # type: ignore[attr-defined]
    except Exception as exc:  # reported to the test, which shows it
        out.put(("error", f"{type(exc).__name__}: {exc}"))  # type: ignore[attr-defined]


@pytest.mark.parametrize("legacy", [False, True], ids=["new", "pre-alembic"])
def test_processes_opening_a_store_at_once_migrate_it_once(db_url, tmp_path, legacy):
    """Four real processes open the same not-yet-migrated store at the same instant; all succeed."""
    url = _load_legacy(db_url, tmp_path) if legacy else db_url
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_open, args=(url, barrier, out)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * 4
    assert results == [("ok", migrations.revisions())] * 4, results
    store = Store(url)
    assert _schema_diff(store) == []
    if legacy:
        assert _counts(store) == LEGACY_ROWS
