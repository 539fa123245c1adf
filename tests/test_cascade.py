from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import verdict_json
from router_data import synthetic_rows, write_rows

from kuaimod_open.errors import ConfigError
from kuaimod_open.ingest.benchmark import load_benchmark
from kuaimod_open.judge.backends.scripted import ScriptedBackend
from kuaimod_open.judge.policy import Decision
from kuaimod_open.judge.verdict import ParseStatus, Stage

pytest.importorskip("sklearn")

from kuaimod_open.first_stage.cascade import Band, CascadeConfig, band_metrics, bands, run_cascade  # noqa: E402
from kuaimod_open.first_stage.router import RouterConfig, train_router  # noqa: E402


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_rows(tmp_path_factory.mktemp("rows") / "rows.jsonl", synthetic_rows(40, seed=3))


@pytest.fixture(scope="module")
def samples(data_file):
    return load_benchmark(data_file)


@pytest.fixture(scope="module")
def router(samples, policy):
    return train_router(samples, policy, RouterConfig(features=["tfidf"], inner_folds=3))


@pytest.fixture(scope="module")
def middle(router, samples):
    """Thresholds that put roughly a third of the samples in each band."""
    p = np.sort(router.score(samples).p_violative)
    return CascadeConfig(allow_below=float(p[13]), flag_at=float(p[27]))


def test_bands_split_on_the_two_thresholds():
    assert bands([0.01, 0.1, 0.5, 0.9, 0.95], 0.1, 0.9) == [
        Band.ALLOW,
        Band.ESCALATE,
        Band.ESCALATE,
        Band.FLAG,
        Band.FLAG,
    ]
    m = band_metrics(np.array([0.01, 0.02, 0.5, 0.99]), np.array([0, 1, 1, 1]), 0.1, 0.9)
    assert m["decided"] == 0.75 and m["violations_allowed"] == pytest.approx(1 / 3) and m["benign_flagged"] == 0.0
    assert m["allowed_violative_rate"] == 0.5


def test_thresholds_come_from_the_card_unless_overridden(router):
    card = router.card.thresholds
    assert card.flag_at < 1.0
    assert CascadeConfig().thresholds(router) == (card.allow_below, card.flag_at)
    assert CascadeConfig(allow_below=0.2).thresholds(router)[0] == 0.2
    with pytest.raises(ValueError, match="must not exceed"):
        CascadeConfig(allow_below=0.8, flag_at=0.3)
    with pytest.raises(ConfigError, match="overlap"):
        CascadeConfig(allow_below=1.0).thresholds(router)  # above the card's flag_at


def test_without_a_vlm_escalated_videos_go_to_review_never_allow(router, samples, policy, middle):
    verdicts = run_cascade(samples, policy, router, config=middle)
    assert [v.sample_id for v in verdicts] == [s.id for s in samples]
    p = router.score(samples).p_violative
    for v, score in zip(verdicts, p, strict=True):
        assert v.stage is Stage.ROUTER and v.status is ParseStatus.OK
        if score < middle.allow_below:
            assert v.decision is Decision.ALLOW and "auto_allow" in v.flags and v.category == "BENIGN"
        elif score >= middle.flag_at:
            assert "auto_flag" in v.flags and v.category != "BENIGN"
            assert v.decision == policy.category(v.category or "").action
        else:
            assert v.decision is Decision.REVIEW and {"escalated", "no_vlm"} <= set(v.flags)
            assert v.category is not None and v.confidence is not None  # the router's guess for the reviewer
    assert sum("escalated" in v.flags for v in verdicts) == 13 + 1


def test_escalated_videos_go_to_the_vlm(router, samples, policy, template, middle):
    backend = ScriptedBackend(default=verdict_json("HATE", 0.8), model_id="vlm")
    verdicts = run_cascade(samples, policy, router, backend=backend, template=template, config=middle)
    escalated = [v for v in verdicts if "escalated" in v.flags]
    assert len(backend.history) == len(escalated) == 14
    assert all(v.stage is Stage.VLM and v.category == "HATE" and v.provenance.model == "vlm" for v in escalated)
    assert all(v.stage is Stage.ROUTER for v in verdicts if "escalated" not in v.flags)
    assert {r.sample_id for r in backend.history} == {v.sample_id for v in escalated}
    with pytest.raises(ConfigError, match="both"):
        run_cascade(samples, policy, router, backend=backend)


def test_cascade_command_writes_verdicts_without_a_vlm(router, data_file, tmp_path):
    from kuaimod_open.cli import cli

    folder = router.save(tmp_path / "router")
    out = tmp_path / "v.jsonl"
    args = ["cascade", str(data_file), "--router", str(folder), "--out", str(out), "--allow-below", "0.3"]
    result = CliRunner().invoke(cli, [*args, "--flag-at", "0.7"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 40 and all(x["stage"] == "router" for x in lines)
    assert all(x["decision"] == "review" for x in lines if "escalated" in x["flags"])
    assert "verdicts written" in result.output


def test_batch_job_with_the_cascade_sends_only_escalated_videos_to_the_vlm(
    router, samples, policy, template, middle, tmp_path
):
    from kuaimod_open.ingest.manifest import WorkItem
    from kuaimod_open.judge.pipeline import ModerationConfig
    from kuaimod_open.serving.runner import RunnerConfig, run_job

    backend = ScriptedBackend(default=verdict_json("HATE", 0.8), model_id="vlm")
    config = ModerationConfig(frames_dir=tmp_path / "frames")

    def judge(batch):
        return run_cascade(batch, policy, router, backend=backend, template=template, config=middle)

    out = tmp_path / "v.jsonl"
    items = [WorkItem(s) for s in samples]
    quiet = RunnerConfig(workers=0, progress=False)
    summary = run_job(items[:25], policy, backend, template, out, config, quiet, judge=judge)
    assert summary.written == 25
    # a second run (e.g. after a crash) resumes: only the 15 new items are judged
    summary = run_job(items, policy, backend, template, out, config, quiet, judge=judge)
    assert summary.written == 15 and summary.skipped == 25
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(x["sample_id"] for x in lines) == sorted(s.id for s in samples)  # one verdict each
    escalated = [x for x in lines if "escalated" in x["flags"]]
    assert len(backend.history) == len(escalated) == 14  # the same split as run_cascade on all rows at once
    assert {x["stage"] for x in lines} == {"router", "vlm"}
    assert all(x["decision"] != "allow" for x in escalated if x["category"] != "BENIGN")


def test_moderate_command_with_router_uses_the_real_vlm_for_escalated_rows(
    router, data_file, tiny_model, middle, tmp_path
):
    from kuaimod_open.cli import cli

    folder = router.save(tmp_path / "router")
    out = tmp_path / "v.jsonl"
    args = ["moderate", str(data_file), "--router", str(folder), "--allow-below", str(middle.allow_below)]
    args += ["--flag-at", str(middle.flag_at)]
    args += ["--model", str(tiny_model), "--device", "cpu", "--max-new-tokens", "8", "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--no-progress", "--no-ocr", "--no-asr"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 40
    vlm = [x for x in lines if x["stage"] == "vlm"]
    routed = [x for x in lines if x["stage"] == "router"]
    assert vlm and routed  # both stages decided something
    # the tiny random model cannot answer: escalated rows go to review, never allow
    assert all(x["decision"] == "review" and "escalated" in x["flags"] for x in vlm)
    assert all(x["status"] == "unparsed" or "truncated_answer" in x["flags"] for x in vlm)
    assert all(x["provenance"]["model"].startswith("router:router@") for x in routed)
    assert "stage" in result.output and "router=" in result.output
    overlapping = ["--out", str(tmp_path / "w.jsonl"), "--allow-below", "1.0", "--flag-at", "0.1"]
    bad = CliRunner().invoke(cli, [*args, *overlapping])
    assert bad.exit_code != 0 and isinstance(bad.exception, ConfigError)  # before the model loads
    assert "must not exceed" in str(bad.exception) and "Loading weights" not in bad.output
    other = CliRunner().invoke(cli, ["cascade", str(data_file), "--router", str(folder), *overlapping[2:]])
    assert other.exit_code != 0 and isinstance(other.exception, ConfigError)


def test_cascade_vlm_asks_for_logprobs_only_when_told(router, data_file, tmp_path, monkeypatch):
    # Issue #18: `cascade --vlm` used to turn log-probabilities on every time (output scores of the whole
    # vocabulary at every step on hf); like `moderate`, it now does so only with --logprobs.
    from helpers import verdict_json

    import kuaimod_open.cli.router as router_cli
    from kuaimod_open.cli import cli
    from kuaimod_open.judge.backends.scripted import ScriptedBackend

    configs = []

    class Recording(ScriptedBackend):
        def generate(self, requests, config):
            configs.append(config)
            return super().generate(requests, config)

    monkeypatch.setattr(router_cli, "build_backend", lambda *a, **k: Recording(default=verdict_json("BENIGN")))
    folder = router.save(tmp_path / "router")
    base = ["cascade", str(data_file), "--router", str(folder), "--vlm", "--allow-below", "0.01", "--flag-at", "1.0"]
    for extra, expected in (([], False), (["--logprobs"], True)):
        configs.clear()
        result = CliRunner().invoke(cli, [*base, *extra, "--out", str(tmp_path / f"v{len(extra)}.jsonl")])
        assert result.exit_code == 0, result.output
        assert configs and all(c.logprobs is expected for c in configs)
