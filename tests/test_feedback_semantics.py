"""Feedback semantics (issue #13): the current label is the latest by created_at, ties go by import order
and are reported, labels are checked against the policy, a byte-order mark is tolerated.

Each test names the finding it pins; each failed on main before this change. Real stores: a SQLite
file, and PostgreSQL when $KUAIMOD_TEST_POSTGRES_URL is set.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kuaimod_open.errors import InputError
from kuaimod_open.loop.feedback import current_labels, feedback_rows, import_feedback, label_ties
from kuaimod_open.loop.store import Store

pytest.importorskip("sqlalchemy")

HEADER = "sample_id,kind,category,decision,reason,author,created_at\n"


def _csv(path: Path, lines: list[str], *, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + (HEADER + "".join(x + "\n" for x in lines)).encode("utf-8"))
    return path


def test_a_feedback_csv_with_a_bom_is_imported(db_url, policy, tmp_path) -> None:
    # Finding: "A feedback CSV with a BOM is rejected" (the first column became '\ufeffsample_id').
    store = Store(db_url)
    path = _csv(tmp_path / "excel.csv", ["s1,reviewer_decision,HATE,,骂人,rev1,2025-01-02T00:00:00Z"], bom=True)
    assert import_feedback(store, path, policy)[:3] == (1, 1, 0)
    assert current_labels(store)["s1"].category == "HATE"
    jsonl = tmp_path / "bom.jsonl"
    row = {"sample_id": "s2", "kind": "user_report", "author": "u1", "created_at": "2025-01-02T00:00:00Z"}
    jsonl.write_bytes(b"\xef\xbb\xbf" + json.dumps(row).encode() + b"\n")
    assert import_feedback(store, jsonl, policy)[:3] == (1, 1, 0)


def test_an_older_decision_imported_later_does_not_become_the_current_label(db_url, policy, tmp_path) -> None:
    # Finding: "A 2024 decision imported after a 2025 one becomes the current label".
    store = Store(db_url)
    new = _csv(tmp_path / "2025.csv", ["s1,reviewer_decision,HATE,,,rev1,2025-06-01T00:00:00Z"])
    old = _csv(tmp_path / "2024.csv", ["s1,reviewer_decision,BENIGN,,,rev2,2024-06-01T00:00:00Z"])
    import_feedback(store, new, policy)
    import_feedback(store, old, policy)
    assert current_labels(store)["s1"].category == "HATE"
    assert len(feedback_rows(store)) == 2  # history kept


def test_latest_compares_instants_across_time_zones(db_url, policy, tmp_path) -> None:
    # 09:00+08:00 is 01:00Z, before 02:00Z; SQLite keeps no zone, so times must be stored in UTC.
    store = Store(db_url)
    path = _csv(
        tmp_path / "tz.csv",
        [
            "s1,reviewer_decision,BENIGN,,,rev1,2025-06-01T02:00:00Z",
            "s1,reviewer_decision,HATE,,,rev2,2025-06-01T09:00:00+08:00",
        ],
    )
    import_feedback(store, path, policy)
    assert current_labels(store)["s1"].category == "BENIGN"


def test_same_time_labels_go_by_import_order_and_are_reported(db_url, policy, tmp_path) -> None:
    # Finding: "With the same timestamp, the last row wins silently".
    store = Store(db_url)
    at = "2025-06-01T00:00:00Z"
    path = _csv(
        tmp_path / "tie.csv",
        [
            f"s1,reviewer_decision,HATE,,,rev1,{at}",
            f"s1,reviewer_decision,BENIGN,,,rev2,{at}",  # same instant, other outcome: a tie
            f"s2,reviewer_decision,HATE,,,rev1,{at}",
            f"s2,appeal_outcome,HATE,,,appeals,{at}",  # same instant, same outcome: no conflict
        ],
    )
    result = import_feedback(store, path, policy)
    assert result.ties == ("s1",)
    assert current_labels(store)["s1"].category == "BENIGN"  # the later row of the file
    assert label_ties(store) == {"s1"}
    later = _csv(tmp_path / "later.csv", ["s1,reviewer_decision,HATE,,,rev3,2025-06-02T00:00:00Z"])
    assert import_feedback(store, later, policy).ties == ()  # a newer label settles it
    assert label_ties(store) == set()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("s1,reviewer_decision,BENIGN,block,,rev1,", "benign class and cannot be blocked"),
        ("s1,appeal_outcome,正向,restrict,,rev1,", "benign class and cannot be restricted"),
        ("s1,reviewer_decision,PORN_VULGAR,allow,looks fine,rev1,", "needs an exception reason code"),
        ("s1,reviewer_decision,HATE,allow,,rev1,", "needs an exception reason code"),
    ],
)
def test_labels_that_contradict_the_policy_are_refused(db_url, policy, tmp_path, line, message) -> None:
    # Finding: "BENIGN + block and PORN_VULGAR + allow are accepted silently".
    store = Store(db_url)
    good = "s0,reviewer_decision,HATE,,,rev1,"
    path = _csv(tmp_path / "bad.csv", [good, line])
    with pytest.raises(InputError, match=message) as info:
        import_feedback(store, path, policy)
    assert "row 2" in str(info.value) and "nothing imported" in str(info.value)
    assert feedback_rows(store) == []


def test_an_allowed_violation_with_an_exception_reason_is_accepted(db_url, policy, tmp_path) -> None:
    store = Store(db_url)
    path = _csv(
        tmp_path / "ok.csv",
        [
            "s1,reviewer_decision,PORN_VULGAR,allow,news_or_education: 性教育科普,rev1,2025-01-01T00:00:00Z",
            "s2,reviewer_decision,BENIGN,allow,,rev1,2025-01-01T00:00:00Z",
            "s3,user_report,,,,u1,2025-01-01T00:00:00Z",
        ],
    )
    assert import_feedback(store, path, policy)[:3] == (3, 3, 0)
    assert current_labels(store)["s1"].decision == "allow"
