"""The SQLite store survives concurrent writers (a batch job recording verdicts while reviewers decide)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
REPO = Path(__file__).resolve().parent.parent
N = 60


def _runner(db: str) -> None:
    from helpers import verdict_json

    from kuaimod_open.ingest.sample import Sample
    from kuaimod_open.judge.policy import load_policy
    from kuaimod_open.judge.verdict import Provenance, parse_verdict
    from kuaimod_open.loop.feedback import record_sample, record_verdict
    from kuaimod_open.loop.store import Store

    policy = load_policy(REPO / "prompts" / "policy.yaml")
    store = Store(db)
    prov = Provenance(model="m", policy_version="1", policy_digest="d", prompt_digest="p", package_version="0")
    for i in range(N):
        sample = Sample(id=f"s{i}", title=f"t{i}")
        record_sample(store, sample)
        record_verdict(store, parse_verdict(verdict_json("HATE"), policy, sample, prov))


def _reviewer(db: str, name: str) -> None:
    from kuaimod_open.judge.policy import load_policy
    from kuaimod_open.loop.feedback import FeedbackEvent, add_feedback
    from kuaimod_open.loop.store import Store

    policy = load_policy(REPO / "prompts" / "policy.yaml")
    store = Store(db)
    for i in range(N):
        add_feedback(
            store,
            FeedbackEvent(
                sample_id=f"s{i}", kind="reviewer_decision", category="BENIGN", author=name, reason=f"{name}-{i}"
            ),
            policy,
        )


def test_concurrent_writers_lose_nothing(tmp_path):
    from kuaimod_open.loop.store import Store

    db = f"sqlite:///{tmp_path / 'k.db'}"
    Store(db)  # create and migrate once, as a deployment does before starting its services
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_runner, args=(db,)),
        ctx.Process(target=_reviewer, args=(db, "alice")),
        ctx.Process(target=_reviewer, args=(db, "bob")),
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    store = Store(db)
    with store.engine.connect() as conn:
        count = lambda table: conn.execute(store.sa.text(f"SELECT count(*) FROM {table}")).scalar()  # noqa: E731
        assert (count("samples"), count("verdicts"), count("feedback")) == (N, N, 2 * N)
        assert conn.execute(store.sa.text("PRAGMA integrity_check")).scalar() == "ok"
