"""Crash-consistent updaters: a run SIGKILLed at each step is finished or undone by the next run; kernel locks.

Regression tests for issue #13 ("Crash consistency"): on the old code ``update router`` killed
during save left an orphan folder holding only ``model.joblib``; killed after registering, the new
router stayed ``candidate`` with none active and the next run said "nothing to do"; the run lock was
a pid file, so two runs that both found a stale lock could both proceed, and a dead holder whose pid
had been reused by another process blocked every later run.

Each kill is a real SIGKILL of a child process running the real updater on a real SQLite store, at
a point chosen by wrapping one function the updater calls.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from router_data import synthetic_rows, write_rows

from kuaimod_open.errors import ConfigError
from kuaimod_open.ingest.benchmark import load_benchmark
from kuaimod_open.judge.policy import load_policy
from kuaimod_open.loop.feedback import FeedbackEvent, add_feedback, record_sample, record_verdict
from kuaimod_open.loop.gate import decisions
from kuaimod_open.loop.registry import Status, active, history
from kuaimod_open.loop.store import Store
from kuaimod_open.loop.updaters.lock import run_lock

pytest.importorskip("sqlalchemy")
REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "prompts" / "policy.yaml"


# --------------------------------------------------------------------------- a real kill in a child


def run_killed(script: str, timeout: float = 300) -> None:
    """Run ``script`` in a child Python; it must die of SIGKILL (the point it kills itself at)."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], env=env, cwd=REPO, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert done.returncode == -9, f"the child was not killed (rc {done.returncode}):\n{done.stderr[-3000:]}"


ROUTER_SETUP = """
import os, signal, sys
from pathlib import Path
from kuaimod_open.ingest.benchmark import load_benchmark
from kuaimod_open.judge.policy import load_policy
from kuaimod_open.loop.gate import golden_set
from kuaimod_open.loop.store import Store
from kuaimod_open.first_stage.model import RouterConfig
import kuaimod_open.loop.updaters.router as updater
store, policy = Store({db!r}), load_policy({policy!r})
golden = golden_set(store, policy, load_benchmark({bench!r}))
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
"""
ROUTER_RUN = """
config = RouterConfig(features=["tfidf"], inner_folds=3)
updater.update_router(store, policy, Path({routers!r}), golden=golden, config=config)
"""


@pytest.fixture
def router_world(tmp_path):
    pytest.importorskip("sklearn")
    policy = load_policy(SHIPPED)
    db = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(db)
    rows = synthetic_rows(60, seed=1)
    for row in rows:
        row["pid"] = f"d{row['pid']}"
    decided = load_benchmark(write_rows(tmp_path / "decided.jsonl", rows))
    for s in decided:
        record_sample(store, s.model_copy(update={"label": None}))
        add_feedback(
            store, FeedbackEvent(sample_id=s.id, kind="reviewer_decision", category=s.label, author="r"), policy
        )
    bench = write_rows(tmp_path / "bench.jsonl", synthetic_rows(30, seed=2))
    names = {"db": db, "policy": str(SHIPPED), "bench": str(bench), "routers": str(tmp_path / "routers")}
    return store, policy, names


def _next_run(store, policy, names):
    from kuaimod_open.first_stage.model import RouterConfig
    from kuaimod_open.loop.gate import golden_set
    from kuaimod_open.loop.updaters.router import update_router

    golden = golden_set(store, policy, load_benchmark(names["bench"]))
    config = RouterConfig(features=["tfidf"], inner_folds=3)
    return update_router(store, policy, Path(names["routers"]), golden=golden, config=config)


def _folders(names) -> list[str]:
    return sorted(p.name for p in Path(names["routers"]).iterdir() if not p.name.startswith(".update"))


def test_router_killed_while_saving_leaves_nothing_the_next_run_trips_on(router_world):
    store, policy, names = router_world
    # Killed inside Router.save, right after model.joblib is written (before the card).
    run_killed(
        ROUTER_SETUP.format(**names)
        + """
import kuaimod_open.first_stage.router as R
def partial_save(self, directory):
    import joblib
    out = Path(directory); out.mkdir(parents=True, exist_ok=True)
    joblib.dump(self.heads, out / R.MODEL_FILE)
    die()
R.Router.save = partial_save
"""
        + ROUTER_RUN.format(**names)
    )
    assert history(store, "router") == []
    result = _next_run(store, policy, names)
    assert result.status == "promoted", result.message
    arts = history(store, "router")
    assert [a.status for a in arts] == [Status.ACTIVE]
    # The half-written folder is gone; only the new router's folder remains.
    assert _folders(names) == [arts[0].name], _folders(names)


def test_router_killed_before_its_gate_decided_is_regated_by_the_next_run(router_world):
    store, policy, names = router_world
    run_killed(ROUTER_SETUP.format(**names) + "updater.compare = die\n" + ROUTER_RUN.format(**names))
    [art] = history(store, "router")
    assert art.status is Status.CANDIDATE and active(store, "router") is None

    result = _next_run(store, policy, names)
    assert "re-gated" in result.message, result.message
    [art] = history(store, "router")
    assert art.status is Status.ACTIVE and active(store, "router").name == art.name
    assert [d.candidate for d in decisions(store, "router")] == [art.name]
    assert store.watermark("router") == art.meta["feedback_until"] > 0
    assert _next_run(store, policy, names).status == "nothing_new"


def test_router_killed_after_recording_the_decision_gets_it_applied(router_world):
    store, policy, names = router_world
    script = (
        ROUTER_SETUP.format(**names)
        + """
real_record = updater.record
def record_then_die(store, result):
    real_record(store, result)
    die()
updater.record = record_then_die
"""
        + ROUTER_RUN.format(**names)
    )
    run_killed(script)
    [art] = history(store, "router")
    assert art.status is Status.CANDIDATE and len(decisions(store, "router")) == 1
    result = _next_run(store, policy, names)
    assert "applied the recorded gate decision" in result.message, result.message
    assert active(store, "router").name == art.name and len(decisions(store, "router")) == 1


def test_a_candidate_whose_folder_is_incomplete_is_discarded_and_retrained(router_world):
    store, policy, names = router_world
    run_killed(ROUTER_SETUP.format(**names) + "updater.compare = die\n" + ROUTER_RUN.format(**names))
    [art] = history(store, "router")
    (Path(art.path) / "model.joblib").unlink()  # e.g. a disk filled up after the rename
    result = _next_run(store, policy, names)
    assert "discarded" in result.message and result.status == "promoted", result.message
    first, second = history(store, "router")
    assert (first.status, second.status) == (Status.REJECTED, Status.ACTIVE)
    assert not Path(first.path).exists()


def test_policy_update_killed_between_writing_and_registering_does_not_block_the_next_run(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    policy = load_policy(SHIPPED)
    from helpers import verdict_json

    from kuaimod_open.ingest.sample import Sample
    from kuaimod_open.judge.verdict import Provenance, parse_verdict

    prov = Provenance(model="m", policy_version="1", policy_digest="d", prompt_digest="p", package_version="0")
    for i in range(3):
        sample = Sample(id=f"t{i}", title=f"想要的私聊我 VX号{i}")
        record_sample(store, sample)
        record_verdict(store, parse_verdict(verdict_json("BENIGN"), policy, sample, prov))
        event = FeedbackEvent(sample_id=sample.id, kind="reviewer_decision", category="PRIVATE_DEAL", author="r")
        add_feedback(store, event, policy)
    versions = tmp_path / "versions"
    from kuaimod_open.loop.registry import register_policy_file

    register_policy_file(store, SHIPPED)  # so the child's first registration is the new version's
    run_killed(
        f"""
        import os, signal
        import kuaimod_open.loop.registry as registry
        from kuaimod_open.loop.store import Store
        from kuaimod_open.loop.updaters.policy import update_policy
        registry.register = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        update_policy(Store({store.url!r}), {str(SHIPPED)!r}, {str(versions)!r})
        """
    )
    from kuaimod_open.loop.updaters.policy import update_policy

    result = update_policy(store, SHIPPED, versions)
    assert result.candidate is not None and result.candidate.name == "1.1.1", result.message
    assert "removed leftovers policy.v1.1.1.yaml" in result.message


def test_policy_update_killed_during_its_gate_is_regated_by_the_next_run(tmp_path):
    from test_update_policy import _decided, phrase_predictor

    from kuaimod_open.ingest.sample import Sample
    from kuaimod_open.loop.registry import active_policy, register_policy_file

    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    policy = load_policy(SHIPPED)
    register_policy_file(store, SHIPPED, status=Status.ACTIVE)
    for i in range(3):
        _decided(store, policy, f"t{i}", f"想要的私聊我 VX号{i}", "BENIGN", "PRIVATE_DEAL", reason="私聊我")
    versions = tmp_path / "versions"
    golden_code = (
        '[Sample(id=f"g{i}", title=f"需要的私聊我 {i}", label="引导私下交易") for i in range(4)]'
        ' + [Sample(id=f"n{i}", title=f"风景视频 {i}", label="正向") for i in range(4)]'
    )
    run_killed(
        f"""
        import os, signal
        from kuaimod_open.ingest.sample import Sample
        from kuaimod_open.loop.store import Store
        import kuaimod_open.loop.updaters.policy as updater
        from test_update_policy import phrase_predictor
        updater.compare = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        golden = {golden_code}
        updater.update_policy(Store({store.url!r}), {str(SHIPPED)!r}, {str(versions)!r}, predictor=phrase_predictor,
                              golden=golden)
        """
    )
    pending = [a for a in history(store, "policy") if a.status is Status.CANDIDATE]
    assert len(pending) == 1 and store.watermark("policy") == 0
    golden = [Sample(id=f"g{i}", title=f"需要的私聊我 {i}", label="引导私下交易") for i in range(4)]
    golden += [Sample(id=f"n{i}", title=f"风景视频 {i}", label="正向") for i in range(4)]
    from kuaimod_open.loop.updaters.policy import update_policy

    result = update_policy(store, SHIPPED, versions, predictor=phrase_predictor, golden=golden)
    assert f"re-gated {pending[0].name}" in result.message and "nothing to do" in result.message, result.message
    assert active_policy(store)[0].version == pending[0].name
    assert store.watermark("policy") == pending[0].meta["feedback_until"] > 0


# --------------------------------------------------------------------------- the lock


def test_two_runs_that_find_a_stale_lock_never_both_proceed(tmp_path, monkeypatch):
    import kuaimod_open.loop.updaters.lock as lock

    folder = tmp_path / "routers"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / ".update-router.lock").write_text(str(dead.pid))  # a holder that died
    # B read the lock file while it still named the dead holder, and decides only after A has taken
    # the lock: the interleaving that let both proceed with a pid file.
    monkeypatch.setattr(lock, "_holder_alive", lambda path: False, raising=False)
    inside, events = threading.Event(), []

    def run_a() -> None:
        with run_lock(folder, "update router"):
            events.append("A in")
            inside.set()
            time.sleep(1.0)
            events.append("A out")

    a = threading.Thread(target=run_a)
    a.start()
    assert inside.wait(10)
    try:
        with run_lock(folder, "update router"):
            events.append("B in")
    except ConfigError as exc:
        events.append("B refused")
        assert "another `kuaimod update router` is running" in str(exc)
    a.join()
    assert events == ["A in", "B refused", "A out"], events


def test_a_dead_holder_frees_the_lock_even_when_its_pid_is_reused(tmp_path):
    folder = tmp_path / "routers"
    # A holder killed with SIGKILL while holding the lock.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom kuaimod_open.loop.updaters.lock "
         f"import run_lock\nwith run_lock(Path({str(folder)!r}), 'update router'):\n    print('held', flush=True)\n"
         "    time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ConfigError, match="running"):
        with run_lock(folder, "update router"):
            pass
    holder.kill()
    holder.wait()
    with run_lock(folder, "update router"):
        pass
    # The file names a live process that never took the lock (its pid was reused): no run is blocked.
    (folder / ".update-router.lock").write_text(str(os.getppid()))
    with run_lock(folder, "update router"):
        pass
