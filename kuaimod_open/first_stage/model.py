"""The trainable part of the router: feature extraction and the scikit-learn heads.

Two kinds of evidence, each with its own linear model, are combined by averaging their logits:

* ``tfidf``: character n-gram TF-IDF per text field -> logistic regression;
* ``e5``: a multilingual-e5-small embedding of the labelled, trimmed fields -> logistic regression;
* ``knn``: a similarity-weighted vote of the 10 most similar training rows (same embeddings), with
  each class's votes divided by its share of the training rows. Short videos come in waves of
  near-identical content (templates, reposts, campaigns); a vote of close neighbours catches those
  where a linear model averages them away.

Averaging logits of a few strong, differently-biased linear models is the most robust ensemble on
a few hundred rows: a learned stacker would need its own held-out data. The binary head (violative
vs benign) decides; the multi-class head (one class per policy category seen in training) names the
category. Both use balanced class weights because benign rows outnumber every violation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from kuaimod_open._lazy import require
from kuaimod_open.core.embedding import E5Embedder
from kuaimod_open.first_stage.features import FieldTfidf, embedding_text, sample_fields
from kuaimod_open.ingest.sample import Sample

FeatureName = Literal["tfidf", "e5", "knn"]
EMBEDDING_FEATURES = frozenset({"e5", "knn"})


def _default_features() -> list[FeatureName]:
    return ["tfidf", "e5", "knn"]


class RouterConfig(BaseModel):
    """How a router is trained (stored in its model card)."""

    features: list[FeatureName] = Field(default_factory=_default_features, min_length=1)
    tfidf_fields: list[str] = Field(default_factory=lambda: ["title", "ocr", "asr", "comments"])
    ngram_min: int = Field(default=1, ge=1, le=5)
    ngram_max: int = Field(default=2, ge=1, le=5)
    c_tfidf: float = Field(default=8.0, gt=0, description="Inverse L2 strength of the TF-IDF model")
    c_e5: float = Field(default=1.0, gt=0, description="Inverse L2 strength of the embedding model")
    knn_k: int = Field(default=10, ge=1, description="Neighbours in the kNN vote")
    knn_temperature: float = Field(default=0.02, gt=0, description="Softness of the similarity weights")
    calibration: Literal["auto", "sigmoid", "isotonic"] = "auto"
    inner_folds: int = Field(default=5, ge=2, le=20, description="Cross-fitting folds for calibration scores")
    max_missed: float = Field(default=0.02, ge=0, le=1, description="Target share of violations auto-allowed")
    max_false_flag: float = Field(default=0.02, ge=0, le=1, description="Target share of benign auto-flagged")
    min_recall: float | None = Field(
        default=None, ge=0, le=1, description="If set, the decision threshold is chosen to reach this recall"
    )
    seed: int = 0
    embed_threads: int = Field(default=2, ge=1)


@dataclass
class Features:
    """Extracted inputs for a set of samples: cleaned fields and (optionally) e5 embeddings."""

    fields: list[dict[str, str]]
    embeddings: np.ndarray | None = None

    def take(self, index: Sequence[int] | np.ndarray) -> Features:
        """The rows at ``index``."""
        idx = np.asarray(index, dtype=int)
        emb = self.embeddings[idx] if self.embeddings is not None else None
        return Features([self.fields[i] for i in idx], emb)

    def __len__(self) -> int:
        return len(self.fields)


def extract_features(samples: Sequence[Sample], config: RouterConfig, encoder: E5Embedder | None = None) -> Features:
    """Clean the text of every sample and embed it when the config uses e5 (cached on disk)."""
    fields = [sample_fields(s) for s in samples]
    embeddings = None
    if EMBEDDING_FEATURES & set(config.features):
        encoder = encoder or E5Embedder(threads=config.embed_threads)
        embeddings = encoder.queries([embedding_text(f) for f in fields])
    return Features(fields, embeddings)


def _logit(p: np.ndarray) -> np.ndarray:
    # clipped at 1e-3: one component's near-certainty must not outvote the others in the mean
    p = np.clip(p, 1e-3, 1 - 1e-3)
    return np.asarray(np.log(p / (1 - p)))


@dataclass
class Heads:
    """The fitted models (pickled with joblib next to the model card)."""

    config: RouterConfig
    tfidf: FieldTfidf | None = None
    binary: dict[str, Any] = field(default_factory=dict)
    multi: dict[str, Any] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    knn_x: np.ndarray | None = None
    knn_y: np.ndarray | None = None

    def _matrices(self, feats: Features) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.tfidf is not None:
            out["tfidf"] = self.tfidf.transform(feats.fields)
        if feats.embeddings is not None and "e5" in self.config.features:
            out["e5"] = feats.embeddings
        return out

    def fit(self, feats: Features, y_binary: np.ndarray, y_category: Sequence[str] | None = None) -> Heads:
        """Fit every component's binary head, and the multi-class heads when categories are given."""
        linear = require("sklearn.linear_model", extra="router", purpose="training the router")
        cfg = self.config
        if "tfidf" in cfg.features:
            self.tfidf = FieldTfidf(cfg.tfidf_fields, (cfg.ngram_min, cfg.ngram_max)).fit(feats.fields)
        if "knn" in cfg.features and feats.embeddings is not None:
            self.knn_x, self.knn_y = feats.embeddings.astype(np.float32), np.asarray(y_binary, dtype=int)
        strength = {"tfidf": cfg.c_tfidf, "e5": cfg.c_e5}
        for name, matrix in self._matrices(feats).items():
            model = linear.LogisticRegression(C=strength[name], max_iter=3000, class_weight="balanced")
            self.binary[name] = model.fit(matrix, y_binary)
            if y_category is not None and len(set(y_category)) > 1:
                multi = linear.LogisticRegression(C=strength[name], max_iter=3000, class_weight="balanced")
                self.multi[name] = multi.fit(matrix, list(y_category))
                self.classes = [str(c) for c in multi.classes_]
        return self

    def components(self, feats: Features) -> dict[str, np.ndarray]:
        """Each component's (uncalibrated) probability that each sample is violative."""
        out = {name: self.binary[name].predict_proba(m)[:, 1] for name, m in self._matrices(feats).items()}
        if self.knn_x is not None and self.knn_y is not None and feats.embeddings is not None:
            out["knn"] = self._knn(feats.embeddings)
        return out

    def _knn(self, emb: np.ndarray) -> np.ndarray:
        assert self.knn_x is not None and self.knn_y is not None
        k = min(self.config.knn_k, len(self.knn_y))
        sims = emb @ self.knn_x.T  # both L2-normalised: cosine similarity
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        s = np.take_along_axis(sims, top, axis=1)
        votes = self.knn_y[top]
        # e5 cosines sit in a narrow band (0.85-0.98): weight by closeness to the nearest neighbour
        w = np.exp((s - s.max(axis=1, keepdims=True)) / self.config.knn_temperature)
        prior = float(np.clip(self.knn_y.mean(), 1e-3, 1 - 1e-3))
        pos = (w * votes).sum(axis=1) / prior
        neg = (w * (1 - votes)).sum(axis=1) / (1 - prior)
        return np.asarray((pos + 0.5) / (pos + neg + 1.0))  # +0.5/+1: a vote of few neighbours stays near 0.5

    def raw_score(self, feats: Features) -> np.ndarray:
        """The ensemble's uncalibrated probability of violation: the mean of the components' logits."""
        parts = self.components(feats)
        z = np.mean([_logit(p) for p in parts.values()], axis=0)
        return np.asarray(1.0 / (1.0 + np.exp(-z)))

    def category_proba(self, feats: Features) -> np.ndarray:
        """``len(feats) x len(classes)`` probabilities: the multi-class heads' probabilities, averaged."""
        if not self.multi:
            return np.zeros((len(feats), len(self.classes)))
        mats = self._matrices(feats)
        logs = [np.log(np.clip(self.multi[n].predict_proba(mats[n]), 1e-9, 1.0)) for n in self.multi]
        # geometric mean of the components' distributions, renormalised
        mean = np.exp(np.mean(logs, axis=0))
        return np.asarray(mean / mean.sum(axis=1, keepdims=True))


__all__ = ["FeatureName", "Features", "Heads", "RouterConfig", "extract_features"]
