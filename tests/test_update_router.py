"""`update router` end to end on a real SQLite store: decisions -> router -> gate -> watermark -> rollback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from router_data import synthetic_rows, write_rows

from kuaimod_open.cli import cli
from kuaimod_open.ingest.benchmark import load_benchmark
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.policy import Policy, load_policy
from kuaimod_open.loop.feedback import FeedbackEvent, add_feedback, record_sample
from kuaimod_open.loop.gate import decisions, golden_set
from kuaimod_open.loop.registry import Status, active, history
from kuaimod_open.loop.store import Store

pytest.importorskip("sklearn")

from kuaimod_open.first_stage.model import RouterConfig  # noqa: E402
from kuaimod_open.first_stage.router import load_router  # noqa: E402
from kuaimod_open.loop.updaters.router import update_router  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FAST = RouterConfig(features=["tfidf"], inner_folds=3)


@pytest.fixture
def policy() -> Policy:
    return load_policy(REPO / "prompts" / "policy.yaml")


@pytest.fixture
def store(db_url) -> Store:
    return Store(db_url)


def _rows(tmp_path: Path, n: int, seed: int, prefix: str) -> list[Sample]:
    rows = synthetic_rows(n, seed=seed)
    for row in rows:
        row["pid"] = f"{prefix}{row['pid']}"
    return load_benchmark(write_rows(tmp_path / f"{prefix}.jsonl", rows))


def _decide(store: Store, policy: Policy, samples: list[Sample], flip: bool = False) -> None:
    """Reviewers decide the samples; ``flip`` makes them swap benign and violative labels (bad labels)."""
    for s in samples:
        record_sample(store, s.model_copy(update={"label": None}))
        label = s.label
        if flip:
            label = "引导私下交易" if label == policy.benign_category.tag else policy.benign_category.tag
        add_feedback(store, FeedbackEvent(sample_id=s.id, kind="reviewer_decision", category=label, author="r"), policy)


def test_first_router_is_promoted_then_nothing_new_then_bad_labels_rejected(store, policy, tmp_path):
    decided = _rows(tmp_path, 60, seed=1, prefix="d")
    bench = _rows(tmp_path, 30, seed=2, prefix="b")
    _decide(store, policy, decided)
    golden = golden_set(store, policy, bench)
    held = [s for s in golden if s.id.startswith("d")]
    assert held and len(held) < len(decided)  # the hash holdout keeps some decisions back for the gate

    first = update_router(store, policy, tmp_path / "routers", golden=golden, config=FAST)
    assert first.status == "promoted", first.message
    assert first.n_train == len(decided) - len(held)  # golden rows never train the candidate
    art = active(store, "router")
    assert art is not None and art.name == first.candidate.name and Path(art.path, "router.json").exists()
    assert art.meta["n_decisions"] == first.n_train and art.meta["features"] == ["tfidf"]
    assert store.watermark("router") == first.watermark > 0
    scored = load_router(art.path).verdicts(bench[:4], policy)
    assert all(v.provenance.model.startswith(f"router:{art.name}") for v in scored)

    again = update_router(store, policy, tmp_path / "routers", golden=golden, config=FAST)
    assert again.status == "nothing_new" and again.candidate is None
    assert len(history(store, "router")) == 1

    # Reviewers relabel every decided case the wrong way round: the retrained router gets worse on
    # the golden benchmark rows, so the gate must keep the current one.
    _decide(store, policy, decided, flip=True)
    worse = update_router(store, policy, tmp_path / "routers", golden=bench, config=FAST)
    assert worse.status == "rejected", worse.message
    assert worse.gate is not None
    assert worse.gate.candidate_metrics["strict_accuracy"] < worse.gate.baseline_metrics["strict_accuracy"]
    assert active(store, "router").name == first.candidate.name
    assert [a.status for a in history(store, "router")] == [Status.ACTIVE, Status.REJECTED]
    assert [d.passed for d in decisions(store, "router")] == [True, False]


def test_extra_training_rows_without_golden_are_saved_not_promoted(store, policy, tmp_path):
    extra = _rows(tmp_path, 40, seed=3, prefix="x")
    _decide(store, policy, _rows(tmp_path, 10, seed=4, prefix="d"))
    result = update_router(store, policy, tmp_path / "r", golden=[], extra_train=extra, config=FAST)
    assert result.status == "saved" and "not gated" in result.message
    assert result.n_train >= len(extra)
    assert active(store, "router") is None and history(store, "router")[0].status is Status.CANDIDATE


def test_cli_update_router_history_and_rollback(store, policy, tmp_path):
    decided = _rows(tmp_path, 60, seed=5, prefix="d")
    bench_path = write_rows(tmp_path / "bench.jsonl", synthetic_rows(30, seed=6))
    _decide(store, policy, decided[:40])
    db = str(store.url)
    runner = CliRunner()
    args = ["update", "router", "--db", db, "--data", str(bench_path), "--features", "tfidf", "--out"]
    out = runner.invoke(cli, [*args, str(tmp_path / "routers")])
    assert out.exit_code == 0, out.output
    assert "promoted" in out.output
    out = runner.invoke(cli, [*args, str(tmp_path / "routers")])
    assert out.exit_code == 0 and "nothing to do" in out.output
    _decide(store, policy, decided[40:])
    # min-improvement 1.0 cannot be met: the second router is rejected whatever its numbers
    out = runner.invoke(cli, [*args, str(tmp_path / "routers"), "--min-improvement", "1.0"])
    assert out.exit_code == 0, out.output
    assert "rejected" in out.output
    hist = runner.invoke(cli, ["history", "router", "--db", db]).output
    assert "active" in hist and "rejected" in hist
    rejected = history(store, "router")[1].name
    refused = runner.invoke(cli, ["rollback", "router", "--to", rejected, "--db", db])
    assert refused.exit_code != 0 and "rejected by the evaluation gate" in str(refused.exception)
    assert active(store, "router").name != rejected  # a version the gate rejected needs --force
    out = runner.invoke(cli, ["rollback", "router", "--to", rejected, "--force", "--db", db])
    assert out.exit_code == 0, out.output
    assert active(store, "router").name == rejected
    bad = runner.invoke(cli, [*args, str(tmp_path / "routers"), "--features", "tfidf,bogus", "--force"])
    assert bad.exit_code != 0 and "bogus" in bad.output
