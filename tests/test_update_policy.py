"""`update policy` end to end on a real SQLite store: disagreements -> new version -> gate -> rollback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from helpers import verdict_json

from kuaimod_open.cli import cli
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.policy import Policy, load_policy
from kuaimod_open.judge.verdict import Provenance, Verdict, parse_verdict
from kuaimod_open.loop.feedback import FeedbackEvent, add_feedback, record_sample, record_verdict
from kuaimod_open.loop.gate import decisions
from kuaimod_open.loop.registry import Status, active_policy, history
from kuaimod_open.loop.store import Store
from kuaimod_open.loop.updaters.policy import bump_version, propose_policy, update_policy

pytest.importorskip("sqlalchemy")
REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "prompts" / "policy.yaml"
PROV = Provenance(model="m", policy_version="1.0.0", policy_digest="d", prompt_digest="p", package_version="0")


def phrase_predictor(samples, policy: Policy) -> list[Verdict]:
    """A policy-following stand-in for the VLM: a category applies when one of its examples or
    includes occurs in the sample's text. It reads the policy, so a better policy scores better."""
    out = []
    for s in samples:
        text = f"{s.title} {s.ocr} {s.asr}"
        hit = next((c for c in policy.violations if any(p and p in text for p in (*c.examples, *c.includes))), None)
        code = hit.code if hit else policy.benign
        out.append(parse_verdict(verdict_json(code, confidence=0.9), policy, s, PROV))
    return out


@pytest.fixture
def store(db_url) -> Store:
    return Store(db_url)


def _decided(store, policy, sid, title, model_says, reviewer_says, reason=""):
    sample = Sample(id=sid, title=title)
    record_sample(store, sample)
    record_verdict(store, parse_verdict(verdict_json(model_says), policy, sample, PROV))
    add_feedback(
        store,
        FeedbackEvent(sample_id=sid, kind="reviewer_decision", category=reviewer_says, author="rev", reason=reason),
        policy,
    )


def test_bump_version():
    assert bump_version("1.0.0") == "1.0.1" and bump_version("2024.9") == "2024.10" and bump_version("beta") == "beta.1"


def test_proposal_adds_examples_includes_and_excludes(store, policy):
    _decided(store, policy, "a", "代购茅台加微信私聊", "BENIGN", "PRIVATE_DEAL", reason="留联系方式引导站外交易")
    _decided(store, policy, "b", "这个偏方包治百病", "HATE", "MISINFO", reason="伪科学")
    _decided(store, policy, "c", "正常的做饭视频", "BENIGN", "BENIGN")  # agreement: nothing to learn
    proposal = propose_policy(store, policy)
    new = proposal.policy
    assert new.version == "1.1.1"
    assert "代购茅台加微信私聊" in new.category("PRIVATE_DEAL").examples
    assert "留联系方式引导站外交易" in new.category("PRIVATE_DEAL").includes
    assert any("MISINFO" in e and "伪科学" in e for e in new.category("HATE").excludes)
    assert new.category("BENIGN") == policy.category("BENIGN")
    assert len(proposal.changes) == 5
    assert load_policy(SHIPPED) == policy  # base untouched


def test_update_without_a_predictor_saves_a_candidate_only(store, policy, tmp_path):
    _decided(store, policy, "a", "加我V：abc123 便宜出", "BENIGN", "PRIVATE_DEAL", reason="站外交易")
    result = update_policy(store, SHIPPED, tmp_path / "versions")
    assert result.candidate.status is Status.CANDIDATE and result.gate is None
    assert Path(result.candidate.path).read_text(encoding="utf-8").startswith("# Proposed by `kuaimod update policy`")
    diff = result.diff_path.read_text(encoding="utf-8")
    assert "+  - 加我V：abc123 便宜出" in diff and "-version: 1.1.0" in diff and "+version: 1.1.1" in diff
    assert "1.1.1" in (tmp_path / "versions" / "CHANGELOG.md").read_text(encoding="utf-8")
    again = update_policy(store, SHIPPED, tmp_path / "versions")  # cron re-run: watermark says nothing new
    assert again.candidate is None and "nothing to do" in again.message


def test_the_gate_promotes_a_helpful_update_and_rejects_a_harmful_edit(store, policy, tmp_path):
    # Reviewers keep correcting one pattern the policy does not describe yet.
    for i in range(3):
        _decided(store, policy, f"t{i}", f"想要的私聊我 VX号{i}", "BENIGN", "PRIVATE_DEAL", reason="私聊我")
    golden = [Sample(id=f"g{i}", title=f"需要的私聊我 {i}", label="引导私下交易") for i in range(4)]
    golden += [Sample(id=f"n{i}", title=f"风景视频 {i}", label="正向") for i in range(4)]
    result = update_policy(store, SHIPPED, tmp_path / "v", predictor=phrase_predictor, golden=golden)
    assert result.gate.passed, result.gate.reasons
    assert active_policy(store)[0].version == "1.1.1"
    assert (
        result.gate.candidate_metrics["violative_recall"] == 1.0
        and result.gate.baseline_metrics["violative_recall"] == 0
    )

    # A deliberately harmful edit: a confidence bar no answer can clear floods the human queue.
    from kuaimod_open.evaluation.metrics import evaluate
    from kuaimod_open.judge.policy import parse_policy
    from kuaimod_open.loop.gate import compare, record

    current = active_policy(store)[0]
    data = current.model_dump(mode="json") | {"version": "1.1.2", "min_confidence": 0.99}
    harmful = parse_policy(yaml.safe_dump(data, allow_unicode=True))
    verdict = compare(
        "policy",
        "1.1.2",
        "1.1.1",
        evaluate(golden, phrase_predictor(golden, harmful), harmful),
        evaluate(golden, phrase_predictor(golden, current), current),
    )
    record(store, verdict)
    assert not verdict.passed and any("review share grew" in r for r in verdict.reasons)
    assert [d.passed for d in decisions(store, "policy")] == [True, False]


def test_cli_feedback_precedents_update_history_and_rollback(store, policy, tmp_path):
    db = store.url
    for sid, title in (("a", "私聊我 有货"), ("b", "私聊我 便宜"), ("c", "看风景")):
        sample = Sample(id=sid, title=title)
        record_sample(store, sample)
        record_verdict(store, parse_verdict(verdict_json("BENIGN"), policy, sample, PROV))
    fb = tmp_path / "fb.jsonl"
    rows = [
        {
            "sample_id": "a",
            "kind": "reviewer_decision",
            "category": "引导私下交易",
            "author": "rev",
            "reason": "私聊我",
        },
        {"sample_id": "b", "kind": "user_report", "author": "u1"},
    ]
    fb.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    runner = CliRunner()
    out = runner.invoke(cli, ["feedback", "import", str(fb), "--db", db])
    assert out.exit_code == 0 and "2 events read, 2 inserted" in out.output
    assert "0 inserted, 2 already stored" in runner.invoke(cli, ["feedback", "import", str(fb), "--db", db]).output
    out = runner.invoke(cli, ["precedents", "promote", "--db", db, "--no-embed"])
    assert out.exit_code == 0 and "1 precedents created" in out.output
    assert "私聊我" in runner.invoke(cli, ["precedents", "list", "--db", db]).output
    out = runner.invoke(cli, ["update", "policy", "--db", db, "--versions-dir", str(tmp_path / "v")])
    assert out.exit_code == 0, out.output
    assert "PRIVATE_DEAL.includes += '私聊我'" in out.output and "not gated" in out.output
    hist = runner.invoke(cli, ["history", "policy", "--db", db]).output
    assert "active" in hist and "candidate" in hist and "1.1.1" in hist
    out = runner.invoke(cli, ["rollback", "policy", "--to", "1.1.1", "--db", db])
    assert out.exit_code == 0 and "active policy is now 1.1.1" in out.output
    out = runner.invoke(cli, ["rollback", "policy", "--db", db])
    assert "active policy is now 1.1.0" in out.output
    assert [a.status for a in history(store, "policy")] == [Status.ACTIVE, Status.RETIRED]
    export = tmp_path / "fb_out.jsonl"
    assert runner.invoke(cli, ["feedback", "export", "--db", db, "--out", str(export)]).exit_code == 0
    assert len(export.read_text(encoding="utf-8").splitlines()) == 2


def test_next_proposal_skips_versions_already_taken(store, policy, tmp_path):
    _decided(store, policy, "a", "加我扣扣：998877", "BENIGN", "PRIVATE_DEAL")
    first = update_policy(store, SHIPPED, tmp_path / "v")
    _decided(store, policy, "b", "包治百病", "BENIGN", "MISINFO")
    second = update_policy(store, SHIPPED, tmp_path / "v")  # base is still 1.1.0: 1.1.1 is taken
    assert (first.candidate.name, second.candidate.name) == ("1.1.1", "1.1.2")
    assert "加我扣扣：998877" not in Path(second.candidate.path).read_text(encoding="utf-8")  # only new cases
