from __future__ import annotations

from pathlib import Path

import pytest
from helpers import verdict_json

from kuaimod_open.errors import ConfigError, PolicyError
from kuaimod_open.evaluation.metrics import evaluate
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.verdict import Provenance, parse_verdict
from kuaimod_open.loop.gate import GateConfig, compare, decisions, golden_set, is_holdout, record, training_set
from kuaimod_open.loop.registry import (
    Status,
    activate,
    active,
    active_policy,
    history,
    policy_diff_text,
    register,
    rollback,
    save_policy_version,
)
from kuaimod_open.loop.store import Store

pytest.importorskip("sqlalchemy")
REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "prompts" / "policy.yaml"
PROV = Provenance(model="m", policy_version="1", policy_digest="d", prompt_digest="p", package_version="0")


@pytest.fixture
def store(db_url) -> Store:
    return Store(db_url)


def test_policy_versions_save_activate_and_roll_back(store, tmp_path):
    policy, path = active_policy(store, default=SHIPPED)
    assert path == SHIPPED and policy.version == "1.1.0"
    text = SHIPPED.read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match="already exists; bump"):
        save_policy_version(store, text.replace("Crude humour", "Crude jokes"), tmp_path / "v")
    with pytest.raises(PolicyError, match="action"):
        save_policy_version(store, text.replace("action: block", "action: nuke", 1), tmp_path / "v")
    v2 = save_policy_version(
        store,
        text.replace('version: "1.1.0"', 'version: "1.2.0"').replace("Crude humour", "Jokes"),
        tmp_path / "v",
        note="clarify benign",
        author="alice",
    )
    assert v2.status is Status.CANDIDATE and Path(v2.path).name == "policy.v1.2.0.yaml"
    assert SHIPPED.read_text(encoding="utf-8") == text  # never edited in place
    assert '-  version: "1.1.0"' not in policy_diff_text(SHIPPED, v2.path)
    assert '+version: "1.2.0"' in policy_diff_text(SHIPPED, v2.path)
    activate(store, v2.id)
    assert active_policy(store)[0].version == "1.2.0"
    back = rollback(store, "policy")
    assert back.name == "1.1.0" and active_policy(store)[0].version == "1.1.0"
    assert rollback(store, "policy", to="1.2.0").name == "1.2.0"
    assert [a.status for a in history(store, "policy")] == [Status.RETIRED, Status.ACTIVE]


def test_generic_registry_for_routers(store):
    a = register(store, "router", "r1", "/tmp/r1", meta={"acc": 0.8})
    assert active(store, "router") is None
    activate(store, a.id)
    b = register(store, "router", "r2", "/tmp/r2")
    activate(store, b.id)
    assert active(store, "router").name == "r2"
    with pytest.raises(ConfigError, match="no router named 'r9'"):
        rollback(store, "router", to="r9")
    assert rollback(store, "router").name == "r1"


def _report(policy, answers):
    samples = [Sample(id=str(i), label=tag) for i, (tag, _) in enumerate(answers)]
    verdicts = [parse_verdict(text, policy, s, PROV) for s, (_, text) in zip(samples, answers, strict=True)]
    return evaluate(samples, verdicts, policy)


GOLD = ["正向"] * 4 + ["色情低俗"] * 4 + ["引导私下交易"] * 4


def _answers(codes):
    return [(tag, verdict_json(code)) for tag, code in zip(GOLD, codes, strict=True)]


def test_gate_promotes_a_better_candidate_and_records_it(policy, store):
    base = _report(policy, _answers(["BENIGN"] * 4 + ["PORN_VULGAR"] * 2 + ["BENIGN"] * 2 + ["PRIVATE_DEAL"] * 4))
    better = _report(policy, _answers(["BENIGN"] * 4 + ["PORN_VULGAR"] * 3 + ["BENIGN"] + ["PRIVATE_DEAL"] * 4))
    result = compare("router", "r2", "r1", better, base)
    assert result.passed and result.category_recall_deltas["PORN_VULGAR"] == pytest.approx(0.25)
    record(store, result)
    assert decisions(store, "router")[0].passed is True


def test_gate_rejects_a_regression_hidden_by_the_average(policy):
    base = _report(policy, _answers(["BENIGN"] * 4 + ["PORN_VULGAR"] + ["BENIGN"] * 3 + ["PRIVATE_DEAL"] * 4))
    # better on average, but one category loses half of its recall (two samples)
    worse = _report(policy, _answers(["BENIGN"] * 4 + ["PORN_VULGAR"] * 4 + ["PRIVATE_DEAL"] * 2 + ["BENIGN"] * 2))
    result = compare("policy", "1.2.0", "1.1.0", worse, base, GateConfig(target="violative_recall"))
    assert result.candidate_metrics["violative_recall"] > result.baseline_metrics["violative_recall"]
    assert not result.passed
    assert any("PRIVATE_DEAL recall regressed" in r for r in result.reasons)


def test_a_single_lost_sample_is_not_a_category_regression_by_default(policy):
    base = _report(policy, _answers(["BENIGN"] * 4 + ["PORN_VULGAR"] + ["BENIGN"] * 3 + ["PRIVATE_DEAL"] * 4))
    one_less = _report(policy, _answers(["BENIGN"] * 4 + ["PORN_VULGAR"] * 4 + ["PRIVATE_DEAL"] * 3 + ["BENIGN"]))
    config = GateConfig(target="violative_recall")
    assert compare("policy", "1.2.0", "1.1.0", one_less, base, config).passed  # 1 of 4: noise on 12 rows
    strict = compare("policy", "1.2.0", "1.1.0", one_less, base, GateConfig(target="violative_recall", min_lost=1))
    assert not strict.passed and any("PRIVATE_DEAL recall regressed" in r for r in strict.reasons)


def test_gate_rejects_a_flood_of_reviews(policy):
    base = _report(policy, _answers(["BENIGN"] * 4 + ["PORN_VULGAR"] * 4 + ["PRIVATE_DEAL"] * 4))
    flooded = _report(
        policy,
        [
            (tag, verdict_json(code, confidence=0.1))
            for tag, code in _answers(["BENIGN"] * 4 + ["PORN_VULGAR"] * 4 + ["PRIVATE_DEAL"] * 4)
        ],
    )
    result = compare("policy", "2.0", "1.0", flooded, base)
    assert not result.passed and any("review share grew" in r for r in result.reasons)


def test_golden_and_training_sets_split_human_decisions(policy, store):
    from kuaimod_open.loop.feedback import FeedbackEvent, add_feedback, record_sample

    for i in range(40):
        record_sample(store, Sample(id=f"s{i}", title=f"t{i}"))
        add_feedback(
            store, FeedbackEvent(sample_id=f"s{i}", kind="reviewer_decision", category="HATE", author="r"), policy
        )
    bench = [Sample(id="b1", label="正向"), Sample(id="b2")]
    gold, train = golden_set(store, policy, bench), training_set(store, policy)
    held = {s.id for s in gold} - {"b1"}
    assert held and held == {f"s{i}" for i in range(40) if is_holdout(f"s{i}")}
    assert held.isdisjoint({s.id for s in train}) and len(held) + len(train) == 40
    assert all(s.label == "辱骂、引战、宣扬仇恨" for s in train) and "b2" not in {s.id for s in gold}


def test_without_a_baseline_the_candidate_must_beat_the_majority_class(policy):
    # GOLD is 8 violative / 4 benign: always saying "violative" scores 8/12 and must not pass.
    all_flagged = _report(policy, _answers(["PORN_VULGAR"] * 12))
    assert all_flagged.strict_binary.majority_accuracy == pytest.approx(8 / 12)
    degenerate = compare("router", "r1", "(none)", all_flagged, None)
    assert not degenerate.passed and "majority-class 0.6667" in degenerate.reasons[0]
    useful = _report(policy, _answers(["BENIGN"] * 3 + ["PORN_VULGAR"] + ["PORN_VULGAR"] * 4 + ["PRIVATE_DEAL"] * 4))
    assert compare("router", "r1", "(none)", useful, None).passed  # 11/12 > 8/12
    silent = _report(policy, _answers(["NOPE"] * 12))
    assert not compare("router", "r1", "(none)", silent, None).passed


def test_benign_recall_has_its_own_tolerance(policy):
    gold = ["正向"] * 20 + ["色情低俗"] * 10

    def report(benign_missed: int, porn_caught: int):
        codes = ["PORN_VULGAR"] * benign_missed + ["BENIGN"] * (20 - benign_missed)
        codes += ["PORN_VULGAR"] * porn_caught + ["BENIGN"] * (10 - porn_caught)
        return _report(policy, [(tag, verdict_json(code)) for tag, code in zip(gold, codes, strict=True)])

    shy = report(0, 2)  # flags almost nothing: benign recall 1.0
    # catching 6 more violations for 2 more false flags (benign recall -0.10) is an improvement
    better = compare("router", "r2", "r1", report(2, 8), shy)
    assert better.passed, better.reasons
    assert better.category_recall_deltas["BENIGN"] == pytest.approx(-0.10)
    # 4 more false flags (-0.20) exceeds the benign tolerance even though accuracy rises
    flaggy = compare("router", "r2", "r1", report(4, 10), shy)
    assert not flaggy.passed and any("more false flags" in r for r in flaggy.reasons)
    assert compare("router", "r2", "r1", report(4, 10), shy, GateConfig(benign_tolerance=0.25)).passed
    # a violation category keeps the strict per-category tolerance
    fewer = compare("router", "r2", "r1", report(0, 0), report(0, 2), GateConfig(target="macro_f1"))
    assert not fewer.passed and any("PORN_VULGAR recall regressed" in r for r in fewer.reasons)
