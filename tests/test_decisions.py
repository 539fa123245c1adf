"""Reviewer decisions are checked against the policy and kept to one per item, reviewer and verdict.

Real stores (a SQLite file, and PostgreSQL when $KUAIMOD_TEST_POSTGRES_URL is set): the uniqueness
rests on the store's unique event id, so it is tested with concurrent writers, not with a mock.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from kuaimod_open.errors import InputError
from kuaimod_open.judge.policy import Decision
from kuaimod_open.judge.verdict import ParseStatus, Provenance, Verdict
from kuaimod_open.loop.feedback import (
    EXCEPTION_REASONS,
    REASON_CODES,
    check_decision,
    current_labels,
    feedback_rows,
    prior_decision,
    record_decision,
    record_verdict,
)
from kuaimod_open.loop.store import Store

pytest.importorskip("sqlalchemy")

PROV = Provenance(model="m", policy_version="1.0.0", policy_digest="d", prompt_digest="p", package_version="0")


def _verdict(store: Store, sample_id: str = "s1", category: str = "HATE") -> int:
    verdict = Verdict(
        sample_id=sample_id,
        decision=Decision.REVIEW,
        category=category,
        confidence=0.4,
        status=ParseStatus.OK,
        provenance=PROV.model_copy(update={"created_at": datetime.now(UTC)}),
    )
    return record_verdict(store, verdict)


def test_violation_allowed_only_with_an_exception_reason(policy) -> None:
    # The defect: HATE / allow with an ordinary reason code was recorded.
    for code in ("wrong_category", "too_strict", "other", ""):
        with pytest.raises(InputError, match="allowing it needs an exception reason"):
            check_decision(policy, "HATE", "allow", code)
    for code in EXCEPTION_REASONS:
        assert check_decision(policy, "HATE", "allow", code) is Decision.ALLOW
        assert code in REASON_CODES
    assert check_decision(policy, "HATE", None, "agree") is Decision.BLOCK  # the policy's action
    assert check_decision(policy, "HATE", "restrict", "too_strict") is Decision.RESTRICT


def test_benign_cannot_be_blocked_and_review_is_no_decision(policy) -> None:
    for decision in ("block", "restrict"):
        with pytest.raises(InputError, match="benign class and is always allowed"):
            check_decision(policy, "BENIGN", decision, "missed_violation")
    assert check_decision(policy, "BENIGN", "allow", "not_violating") is Decision.ALLOW
    assert check_decision(policy, "正向", None, "agree") is Decision.ALLOW  # tags work as codes
    with pytest.raises(InputError, match="not a decision a reviewer can record"):
        check_decision(policy, "HATE", "review", "needs_context")
    with pytest.raises(InputError, match="unknown decision"):
        check_decision(policy, "HATE", "ban", "other")
    with pytest.raises(InputError, match="unknown category"):
        check_decision(policy, "GAMBLING", "block", "other")


def test_refused_decision_stores_nothing(db_url, policy) -> None:
    store = Store(db_url)
    vid = _verdict(store)
    with pytest.raises(InputError, match="exception reason"):
        record_decision(store, policy, sample_id="s1", verdict_id=vid, author="alice", category="HATE",
                        decision="allow", reason_code="wrong_category")  # fmt: skip
    assert feedback_rows(store) == []
    event = record_decision(store, policy, sample_id="s1", verdict_id=vid, author="alice", category="HATE",
                            decision="allow", reason_code="news_or_education", note="documentary")  # fmt: skip
    assert (event.category, event.decision, event.reason) == ("HATE", Decision.ALLOW, "news_or_education: documentary")
    assert current_labels(store)["s1"].decision is Decision.ALLOW


def test_one_decision_per_item_reviewer_and_verdict_unless_amended(db_url, policy) -> None:
    store = Store(db_url)
    vid = _verdict(store)
    record_decision(store, policy, sample_id="s1", verdict_id=vid, author="alice", category="HATE", decision=None,
                    reason_code="agree")  # fmt: skip
    with pytest.raises(InputError, match="alice already recorded HATE / block .*amend it explicitly"):
        record_decision(store, policy, sample_id="s1", verdict_id=vid, author="alice", category="BENIGN",
                        decision="allow", reason_code="not_violating")  # fmt: skip
    assert [r["category"] for r in feedback_rows(store)] == ["HATE"]
    # an explicit amendment is a new event; history keeps both, the label is the newest
    record_decision(store, policy, sample_id="s1", verdict_id=vid, author="alice", category="BENIGN",
                    decision="allow", reason_code="not_violating", amend=True)  # fmt: skip
    assert [r["category"] for r in feedback_rows(store)] == ["HATE", "BENIGN"]
    assert current_labels(store)["s1"].category == "BENIGN"
    assert prior_decision(store, "s1", vid, "alice").category == "HATE"  # the first decision stays on record
    # another reviewer, or a new verdict of the same sample, is a decision of its own
    record_decision(store, policy, sample_id="s1", verdict_id=vid, author="bob", category="HATE", decision=None,
                    reason_code="agree")  # fmt: skip
    new_vid = _verdict(store)
    record_decision(store, policy, sample_id="s1", verdict_id=new_vid, author="alice", category="HATE",
                    decision=None, reason_code="agree")  # fmt: skip
    assert len(feedback_rows(store)) == 4


def test_concurrent_double_submit_records_one_decision(db_url, policy) -> None:
    store = Store(db_url)
    vid = _verdict(store)
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def submit() -> None:
        own = Store(db_url)  # each request has its own connection pool, like two app instances
        barrier.wait()
        try:
            record_decision(own, policy, sample_id="s1", verdict_id=vid, author="alice", category="HATE",
                            decision=None, reason_code="agree")  # fmt: skip
            outcomes.append("stored")
        except InputError:
            outcomes.append("refused")
        finally:
            own.engine.dispose()

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 5 + ["stored"]
    assert len(feedback_rows(store)) == 1
