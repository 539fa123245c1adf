"""The one verdict writer: resume, torn lines, locks, exactly once into the file AND the feedback store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import verdict_json

from kuaimod_open.errors import ConfigError
from kuaimod_open.ingest.manifest import WorkItem
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.backends.base import GenerateConfig
from kuaimod_open.judge.backends.scripted import ScriptedBackend
from kuaimod_open.judge.pipeline import ModerationConfig
from kuaimod_open.serving.runner import RunnerConfig, run_job
from kuaimod_open.serving.writer import VerdictWriter, completed_ids

QUIET = RunnerConfig(workers=0, progress=False)


def _config(tmp_path: Path, batch_size: int = 2) -> ModerationConfig:
    return ModerationConfig(frames=4, frames_dir=tmp_path / "frames", generate=GenerateConfig(batch_size=batch_size))


def _items(*ids: str) -> list[WorkItem]:
    return [WorkItem(Sample(id=i, title=f"title {i}")) for i in ids]


def _ids(out: Path) -> list[str]:
    return [json.loads(x)["sample_id"] for x in out.read_text(encoding="utf-8").splitlines()]


def test_appends_resumes_and_writes_a_manifest(policy, template, tmp_path):
    out = tmp_path / "verdicts.jsonl"
    first = run_job(_items("s0", "s1"), policy, ScriptedBackend(default=verdict_json("BENIGN")), template, out,
                    _config(tmp_path), QUIET)  # fmt: skip
    assert first.written == 2
    backend = ScriptedBackend(default=verdict_json("HATE"))
    second = run_job(_items("s0", "s1", "s2", "s3"), policy, backend, template, out, _config(tmp_path), QUIET)
    assert (second.skipped, second.written) == (2, 2)
    assert [r.sample_id for r in backend.history] == ["s2", "s3"]
    assert _ids(out) == ["s0", "s1", "s2", "s3"]
    manifest = json.loads((tmp_path / "verdicts.jsonl.manifest.json").read_text(encoding="utf-8"))
    assert manifest["summary"]["written"] == 2 and manifest["policy_digest"] == policy.digest


def test_torn_last_line_from_a_killed_run_is_dropped_and_redone(policy, template, tmp_path):
    out = tmp_path / "v.jsonl"
    run_job(_items("a", "b"), policy, ScriptedBackend(default=verdict_json("BENIGN")), template, out,
            _config(tmp_path), QUIET)  # fmt: skip
    text = out.read_text(encoding="utf-8")
    out.write_text(text + text.splitlines()[0][:40], encoding="utf-8")  # a write cut short by kill -9
    assert completed_ids(out) == {"a", "b"}
    run_job(_items("a", "b", "c"), policy, ScriptedBackend(default=verdict_json("BENIGN")), template, out,
            _config(tmp_path), QUIET)  # fmt: skip
    assert _ids(out) == ["a", "b", "c"]


def test_refuses_to_append_to_a_foreign_file(tmp_path):
    out = tmp_path / "notes.jsonl"
    out.write_text('{"hello": 1}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="not a verdict line"):
        completed_ids(out)
    with pytest.raises(ConfigError, match="not a verdict line"), VerdictWriter(out):
        pass
    import fcntl

    with (tmp_path / "notes.jsonl.lock").open("a") as lock:  # the failed open let the lock go
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_finished_id_is_never_written_twice_and_the_lock_excludes_a_second_writer(policy, template, tmp_path):
    out = tmp_path / "v.jsonl"
    verdicts = list(
        __import__("kuaimod_open").moderate(
            [Sample(id="x", title="t")], policy, ScriptedBackend(default=verdict_json("BENIGN")), template
        )
    )
    with VerdictWriter(out) as writer:
        assert writer.write(verdicts[0]) is True
        assert writer.write(verdicts[0]) is False  # exactly once, even if a judge answers twice
        with pytest.raises(ConfigError, match="Another job is writing"), VerdictWriter(out):
            pass
    with VerdictWriter(out, unique=False) as log:  # the online service logs a re-upload of the same id again
        assert log.write(verdicts[0]) is True
    assert _ids(out) == ["x", "x"]


def test_store_gets_every_verdict_exactly_once_across_a_crash_between_file_and_store(policy, template, tmp_path):
    """A database outage right after a verdict line was written: the re-run repairs the store, no duplicates."""
    import kuaimod_open.loop.feedback as feedback
    from kuaimod_open.loop.feedback import latest_verdicts, stored_samples
    from kuaimod_open.loop.store import Store

    store = Store(f"sqlite:///{tmp_path / 'k.db'}")
    out = tmp_path / "v.jsonl"
    real = feedback.record_verdict
    calls = {"n": 0}

    def flaky(store_: Store, verdict: object, **kwargs: object) -> int:
        calls["n"] += 1
        if calls["n"] == 3:
            raise ConnectionError("database went away")
        return real(store_, verdict, **kwargs)  # type: ignore[arg-type]

    backend = ScriptedBackend(default=verdict_json("HATE"))
    items = _items("a", "b", "c", "d", "e")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(feedback, "record_verdict", flaky)
        with pytest.raises(ConnectionError):
            run_job(items, policy, backend, template, out, _config(tmp_path, 1), QUIET, store=store)
    assert _ids(out) == ["a", "b", "c"]  # the third line reached the file, its verdict not the store
    assert set(latest_verdicts(store)) == {"a", "b"}
    summary = run_job(items, policy, backend, template, out, _config(tmp_path, 1), QUIET, store=store)
    assert summary.skipped == 3 and summary.written == 2
    assert _ids(out) == ["a", "b", "c", "d", "e"]
    with store.engine.connect() as conn:
        rows = conn.execute(store.sa.text("SELECT sample_id FROM verdicts ORDER BY id")).all()
    assert sorted(r[0] for r in rows) == ["a", "b", "c", "d", "e"]  # each exactly once
    assert set(stored_samples(store)) == {"a", "b", "c", "d", "e"}
    # and a third run with nothing to do changes nothing
    run_job(items, policy, backend, template, out, _config(tmp_path, 1), QUIET, store=store)
    with store.engine.connect() as conn:
        assert conn.execute(store.sa.text("SELECT count(*) FROM verdicts")).scalar() == 5


def test_preparation_failures_are_written_and_stored_too(policy, template, tmp_path):
    from kuaimod_open.loop.feedback import latest_verdicts
    from kuaimod_open.loop.store import Store

    store = Store(f"sqlite:///{tmp_path / 'k.db'}")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    items = [WorkItem(Sample(id="bad", video=broken)), *_items("ok")]
    summary = run_job(items, policy, ScriptedBackend(default=verdict_json("BENIGN")), template, tmp_path / "v.jsonl",
                      _config(tmp_path), QUIET, store=store)  # fmt: skip
    assert summary.written == 2 and len(summary.errors) == 1
    stored = latest_verdicts(store)
    assert stored["bad"][1].status == "error" and stored["bad"][1].decision == "review"
