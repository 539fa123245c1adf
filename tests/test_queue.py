"""The review queue as an indexed query (issue #17): membership, keyset pages, totals, claims.

Real stores (SQLite, and PostgreSQL when $KUAIMOD_TEST_POSTGRES_URL is set). Membership is checked
against an oracle written here from the documented rule, over verdicts and feedback generated with
every stage, status and decision; claims are raced by real processes.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kuaimod_open.judge.flags import Flag
from kuaimod_open.judge.policy import Decision
from kuaimod_open.judge.verdict import ParseStatus, Provenance, Stage, Verdict
from kuaimod_open.loop import queue
from kuaimod_open.loop.feedback import FeedbackEvent, add_feedback, record_decision, record_verdict, record_verdicts
from kuaimod_open.loop.queue import NO_CATEGORY, QueueFilters, SortKey, claim, claim_next, queue_page, release
from kuaimod_open.loop.store import Store

pytest.importorskip("sqlalchemy")
REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 5, 1, tzinfo=UTC)
CATS = ["HATE", "BENIGN", "PORN_VULGAR", "PRIVATE_DEAL", "MISINFO", None]


def _verdict(sample_id: str, rng: random.Random, minutes: int) -> Verdict:
    status = rng.choice([ParseStatus.OK] * 8 + [ParseStatus.UNPARSED, ParseStatus.ERROR])
    category = None if status is not ParseStatus.OK else rng.choice(CATS[:-1])
    decision = rng.choice([Decision.ALLOW, Decision.BLOCK, Decision.RESTRICT, Decision.REVIEW])
    if status is not ParseStatus.OK:
        decision = Decision.REVIEW
    conf = None if status is not ParseStatus.OK or rng.random() < 0.1 else round(rng.random(), 3)
    return Verdict(
        sample_id=sample_id,
        decision=decision,
        category=category,
        confidence=conf,
        token_confidence=round(rng.random(), 3) if rng.random() < 0.3 else None,
        status=status,
        stage=rng.choice(list(Stage)),
        flags=[Flag.LOW_CONFIDENCE] if decision is Decision.REVIEW and rng.random() < 0.5 else [],
        provenance=Provenance(
            model="m",
            policy_version=rng.choice(["1.0.0", "1.0.1"]),
            policy_digest="d",
            prompt_digest="p",
            package_version="0",
            created_at=T0 + timedelta(minutes=minutes),
        ),
    )


def _fill(store: Store, policy, n: int = 120, seed: int = 7) -> dict[str, list]:
    """Verdicts (some samples twice), decisions and reports; returns what the oracle needs."""
    rng = random.Random(seed)
    verdicts = [_verdict(f"s{i:03d}", rng, i) for i in range(n)]
    record_verdicts(store, verdicts, policy=policy)
    again = [_verdict(f"s{i:03d}", rng, 1000 + i) for i in range(0, n, 7)]  # newer verdicts for some samples
    for v in again:
        record_verdict(store, v, policy=policy)
    events = []
    for i in range(0, n, 3):
        minutes = rng.choice([500, 5000])  # before or after the second verdict
        when = T0 + timedelta(minutes=minutes)
        events.append(
            FeedbackEvent(sample_id=f"s{i:03d}", kind="reviewer_decision", category="HATE", author="r", created_at=when)
        )
    for i in range(0, n, 5):
        when = T0 + timedelta(minutes=rng.choice([100, 6000]))
        events.append(FeedbackEvent(sample_id=f"s{i:03d}", kind="user_report", author=f"u{i}", created_at=when))
    for e in events:
        add_feedback(store, e, policy)
    latest = {v.sample_id: v for v in [*verdicts, *again]}
    return {"latest": list(latest.values()), "events": events}


def _oracle(data: dict[str, list], low: float = 0.6) -> set[str]:
    """The queue rule, from the module docstring, computed the slow way."""
    pending = set()
    for v in data["latest"]:
        labels = [e.created_at for e in data["events"] if e.sample_id == v.sample_id and e.kind.is_label]
        decided = max(labels) if labels else None
        reports = [e for e in data["events"] if e.sample_id == v.sample_id and e.kind == "user_report"]
        open_reports = [e for e in reports if decided is None or e.created_at > decided]
        needs = (
            v.decision is Decision.REVIEW
            or v.status in (ParseStatus.UNPARSED, ParseStatus.ERROR)
            or (v.confidence is not None and v.confidence < low)
        )
        if (needs and (decided is None or decided < v.provenance.created_at)) or open_reports:
            pending.add(v.sample_id)
    return pending


def _walk(store: Store, **kw) -> list:
    rows, cursor = [], None
    while True:
        page = queue_page(store, cursor=cursor, limit=7, **kw)
        rows.extend(page.rows)
        if page.next_cursor is None:
            return rows
        cursor = page.next_cursor


def test_membership_pages_and_totals_match_the_rule(db_url, policy) -> None:
    store = Store(db_url)
    data = _fill(store, policy)
    expected = _oracle(data)
    for sort in SortKey:
        rows = _walk(store, sort=sort)
        assert [r.sample_id for r in rows] != [] and {r.sample_id for r in rows} == expected
        assert len(rows) == len(expected)  # no item twice across page boundaries
        keys = [tuple(getattr(r, c) for c in queue.SORT_COLUMNS[sort]) for r in rows]
        assert keys == sorted(keys, reverse=sort is not SortKey.OLDEST)
    first = queue_page(store, limit=7)
    assert first.total == len(expected) and first.prev_cursor is None
    # Walking back from page 3 gives pages 2 and 1 exactly.
    p2 = queue_page(store, cursor=first.next_cursor, limit=7)
    p3 = queue_page(store, cursor=p2.next_cursor, limit=7)
    back2 = queue_page(store, cursor=p3.prev_cursor, limit=7)
    back1 = queue_page(store, cursor=back2.prev_cursor, limit=7)
    assert [r.sample_id for r in back2.rows] == [r.sample_id for r in p2.rows]
    assert [r.sample_id for r in back1.rows] == [r.sample_id for r in first.rows] and back1.prev_cursor is None


def test_filters_and_threshold(db_url, policy) -> None:
    store = Store(db_url)
    data = _fill(store, policy)
    by_id = {v.sample_id: v for v in data["latest"]}
    expected = _oracle(data)
    for cat in ("HATE", NO_CATEGORY):
        rows = _walk(store, filters=QueueFilters(category=cat))
        want = {s for s in expected if (by_id[s].category or NO_CATEGORY) == cat}
        assert {r.sample_id for r in rows} == want and queue.queue_count(store, QueueFilters(category=cat)) == len(want)
    rows = _walk(store, filters=QueueFilters(policy_version="1.0.1"))
    assert {r.sample_id for r in rows} == {s for s in expected if by_id[s].provenance.policy_version == "1.0.1"}
    assert queue.set_low_confidence(store, 0.9) == len(_oracle(data, 0.9))
    assert {r.sample_id for r in _walk(store)} == _oracle(data, 0.9)
    assert queue.low_confidence(store) == 0.9


def test_a_decision_removes_one_item_and_a_report_or_new_verdict_brings_it_back(db_url, policy) -> None:
    store = Store(db_url)
    _fill(store, policy, n=30)
    top = queue_page(store).rows[0]
    total = queue_page(store).total
    record_decision(store, policy, sample_id=top.sample_id, verdict_id=top.verdict_id, author="alice",
                    category="HATE", decision=None, reason_code="missed_violation")  # fmt: skip
    after = queue_page(store)
    assert after.total == total - 1 and top.sample_id not in {r.sample_id for r in after.rows}
    add_feedback(store, FeedbackEvent(sample_id=top.sample_id, kind="user_report", author="u"), policy)
    row = queue.queue_row(store, top.sample_id)
    assert row is not None and row.open_reports == 1 and "reported x1" in row.reasons
    assert queue_page(store).total == total


def test_claims_lease_skip_expire_and_release(db_url, policy) -> None:
    store = Store(db_url)
    _fill(store, policy, n=30)
    first = claim_next(store, "alice", lease_s=60)
    assert first is not None and first.claimed_by == "alice"
    assert claim(store, first.sample_id, "bob") is False
    second = claim_next(store, "bob", lease_s=0.2)
    assert second is not None and second.sample_id != first.sample_id
    assert claim_next(store, "alice", lease_s=60).sample_id == first.sample_id  # own lease: same item again
    time.sleep(0.4)
    assert claim(store, second.sample_id, "carol") is True  # bob's lease expired
    assert release(store, second.sample_id, "bob") is False and release(store, second.sample_id, "carol") is True
    # A decision ends the lease and the item leaves the queue.
    record_decision(store, policy, sample_id=first.sample_id, verdict_id=first.verdict_id, author="alice",
                    category="BENIGN", decision="allow", reason_code="not_violating")  # fmt: skip
    assert queue.queue_row(store, first.sample_id).claimed_by is None


def _claimer(url: str, name: str, n: int, barrier, out) -> None:
    from kuaimod_open.loop.queue import claim_next
    from kuaimod_open.loop.store import Store

    store = Store(url)
    barrier.wait()
    got = []
    for k in range(n):
        row = claim_next(store, f"{name}-reviewer{k}", lease_s=600)  # each claim for another reviewer
        if row is None:
            break
        got.append(row.sample_id)
    out.put((name, got))


def test_two_processes_never_get_the_same_item(db_url, policy) -> None:
    store = Store(db_url)
    data = _fill(store, policy, n=90)
    pending = len(_oracle(data))
    per = pending // 2 + 5  # together they ask for more than there is
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(db_url, name, per, barrier, out)) for name in ("app-1", "app-2")]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=240) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    a, b = results["app-1"], results["app-2"]
    assert not set(a) & set(b), "an item was handed to both instances"
    assert len(a) + len(b) == pending and len(set(a)) == len(a) and a and b


def test_the_migration_backfills_the_queue_of_an_old_store(tmp_path) -> None:
    import shutil

    target = tmp_path / "legacy.db"
    shutil.copy(REPO / "tests" / "data" / "legacy_store" / "m004.sqlite", target)
    store = Store(f"sqlite:///{target}")
    rows = {r.sample_id: r for r in _walk(store)}
    # legacy-01/-05: decided after their verdicts; legacy-02: appeal; legacy-03: reported; legacy-11: error.
    assert "legacy-11" in rows and rows["legacy-11"].reasons[0] == "error"
    assert "legacy-03" in rows and rows["legacy-03"].open_reports == 1
    assert not {"legacy-01", "legacy-02", "legacy-05"} & set(rows)
    assert queue_page(store).total == len(rows)


def test_kuaimod_queue_prints_the_same_query(db_url, policy) -> None:
    import json

    from click.testing import CliRunner

    from kuaimod_open.cli import cli

    store = Store(db_url)
    data = _fill(store, policy, n=40)
    expected = _oracle(data)
    runner = CliRunner()
    result = runner.invoke(cli, ["queue", "--db", db_url, "--format", "jsonl", "--limit", "5", "--sort", "severity"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.output.splitlines()]
    *items, tail = lines
    assert len(items) == 5 and tail["total"] == len(expected) and tail["next_cursor"]
    page = queue_page(store, sort="severity", limit=5)
    assert [i["sample_id"] for i in items] == [r.sample_id for r in page.rows]
    more = runner.invoke(cli, ["queue", "--db", db_url, "--format", "jsonl", "--limit", "5", "--sort", "severity",
                               "--cursor", tail["next_cursor"]])  # fmt: skip
    assert [json.loads(x)["sample_id"] for x in more.output.splitlines()[:-1]] == [
        r.sample_id for r in queue_page(store, sort="severity", limit=5, cursor=page.next_cursor).rows
    ]
    table = runner.invoke(cli, ["queue", "--db", db_url, "--category", "HATE"])
    assert table.exit_code == 0 and table.output.splitlines()[0].split()[:3] == ["sample", "title", "decision"]
    assert f"of {queue.queue_count(store, QueueFilters(category='HATE'))} pending" in table.output


def test_generated_store_queue_equals_a_rebuild(db_url) -> None:
    """bench/synthetic_store.py fills through the bulk paths; the queue they maintained incrementally
    must equal the one rebuilt from scratch (the migration's backfill)."""
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    from synthetic_store import fill

    counts = fill(db_url, 400, seed=3, batch=150, quiet=True)
    assert counts["samples"] == 400 and counts["verdicts"] > 400 and counts["feedback"] > 0
    store = Store(db_url)

    def snapshot() -> list[tuple]:
        t = store.table("review_queue")
        cols = [c for c in t.c if c.name not in ("claimed_by", "claim_expires")]
        with store.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(store.sa.select(*cols).order_by(t.c.sample_id))]

    incremental = snapshot()
    queue.rebuild(store)
    assert snapshot() == incremental and len(incremental) == 400
    stages = {r.sample_id for r in _walk(store)}
    assert stages and queue_page(store).total == len(stages)


def test_search_by_sample_id_prefix(db_url, policy) -> None:
    """The review app's search box (added by review_ui): pending items whose id starts with the text, by id."""
    store = Store(db_url)
    ids = ["clip-10", "clip-2", "clip-1", "clip-1x", "other", "Clip-1", "clip-1\u4e2d"]
    verdicts = [_verdict(i, random.Random(0), n).model_copy(update={"decision": Decision.REVIEW}) for n, i in
                enumerate(ids)]  # fmt: skip
    vids = dict(zip(ids, record_verdicts(store, verdicts, policy=policy), strict=True))
    found = queue.search_page(store, "clip-1")
    assert [r.sample_id for r in found.rows] == sorted(["clip-1", "clip-10", "clip-1x", "clip-1\u4e2d"])
    assert found.total == 4 and found.next_cursor is None
    assert [r.sample_id for r in queue.search_page(store, "clip-1", limit=2).rows] == ["clip-1", "clip-10"]
    assert queue.search_page(store, "clip-1", limit=2).total == 4
    assert queue.search_page(store, "nope").rows == []
    record_decision(store, policy, sample_id="clip-10", verdict_id=vids["clip-10"], author="r", category="BENIGN",
                    decision=None, reason_code="not_violating")  # fmt: skip
    assert "clip-10" not in [r.sample_id for r in queue.search_page(store, "clip").rows]  # only pending items
