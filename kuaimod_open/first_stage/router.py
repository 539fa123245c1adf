"""The cheap first stage: a trainable text router with calibrated scores and a model card.

Train on labelled samples (benchmark rows, reviewer decisions), save to a folder, load it back::

    router = train_router(samples, policy)          # features, heads, calibration, thresholds
    router.save("routers/v1")                       # router.json (model card) + model.joblib
    router = load_router("routers/v1")
    verdicts = router.verdicts(samples, policy)     # stage=router, confidence = calibrated prob.

Training is *cross-fitted*: the heads are trained ``inner_folds`` times on part of the training
data and score the rest, and those out-of-fold scores (never seen in fitting) are what the
calibrator and the cascade thresholds are fitted on. Then the heads are refitted on all rows.
The model card records the data hash, features, out-of-fold metrics and the thresholds.

``model.joblib`` is a pickle: load routers only from folders you trust. The card stores its
sha256, and loading refuses a file that does not match.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from kuaimod_open import __version__
from kuaimod_open._lazy import require
from kuaimod_open.core.calibration import (
    Calibrator,
    allow_threshold,
    fit_calibrator,
    flag_threshold,
    recall_threshold,
    roc_auc,
)
from kuaimod_open.core.embedding import EMBED_MODEL, E5Embedder
from kuaimod_open.errors import ConfigError, InputError
from kuaimod_open.first_stage.model import EMBEDDING_FEATURES, Features, Heads, RouterConfig, extract_features
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.flags import Flag
from kuaimod_open.judge.policy import Decision, Policy
from kuaimod_open.judge.verdict import ParseStatus, Provenance, Stage, Verdict

CARD_FILE = "router.json"
MODEL_FILE = "model.joblib"
CARD_FORMAT = "kuaimod-router/1"


class Thresholds(BaseModel):
    """Cut-offs on the calibrated probability of violation ``p``.

    The router alone calls a sample violative when ``p >= decision``. In a cascade, ``p <
    allow_below`` is auto-allowed, ``p >= flag_at`` is auto-flagged, everything between goes on
    to the VLM (or to human review when there is none).
    """

    decision: float = Field(default=0.5, ge=0, le=1)
    allow_below: float = Field(default=0.0, ge=0)
    flag_at: float = Field(default=1.0 + 1e-6, ge=0)


class RouterCard(BaseModel):
    """Everything needed to know what a router is and how good it was when trained."""

    format: str = CARD_FORMAT
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    package_version: str = __version__
    library_versions: dict[str, str] = Field(default_factory=dict)
    data_hash: str = Field(description="sha256 of the training rows (ids, labels, text), canonical order")
    n_train: int
    label_counts: dict[str, int]
    policy_version: str
    policy_digest: str
    benign: str
    config: RouterConfig
    features: list[str]
    embedding_model: str | None = None
    classes: list[str] = Field(description="Category codes of the multi-class head")
    calibrator: Calibrator
    thresholds: Thresholds
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Out-of-fold (cross-fitted) metrics on the training data"
    )
    timing_s: dict[str, float] = Field(default_factory=dict)
    model_sha256: str = ""


@dataclass(frozen=True)
class RouterScores:
    """Scores for a batch of samples."""

    p_violative: np.ndarray  # calibrated probability that each sample violates the policy
    category_proba: np.ndarray  # n x len(classes), from the multi-class head
    classes: list[str]

    def top_violation(self, benign: str) -> list[str | None]:
        """The most likely violation category of each sample (ignoring the benign class)."""
        keep = [i for i, c in enumerate(self.classes) if c != benign]
        if not keep or self.category_proba.size == 0:
            return [None] * len(self.p_violative)
        best = np.asarray(keep)[np.argmax(self.category_proba[:, keep], axis=1)]
        return [self.classes[int(i)] for i in best]


class Router:
    """A trained first stage: scores, verdicts, save. Build with :func:`train_router` or :func:`load_router`."""

    def __init__(self, card: RouterCard, heads: Heads, name: str = "unsaved") -> None:
        self.card = card
        self.heads = heads
        self.name = name
        self.encoder: E5Embedder | None = None
        # Cross-fitted calibrated scores and labels of the training rows (only right after training;
        # not saved): lets callers pick further thresholds without touching evaluation data.
        self.oof: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def model_id(self) -> str:
        """``router:<folder name>@<short data hash>``, recorded in verdict provenance."""
        return f"router:{self.name}@{self.card.data_hash[:8]}"

    def features(self, samples: Sequence[Sample]) -> Features:
        """Extract features for ``samples`` (embeddings come from, and go to, the on-disk cache)."""
        if self.encoder is None and EMBEDDING_FEATURES & set(self.card.config.features):
            self.encoder = E5Embedder(threads=self.card.config.embed_threads)
        return extract_features(samples, self.card.config, self.encoder)

    def score(self, samples: Sequence[Sample]) -> RouterScores:
        """Calibrated probability of violation and category probabilities for every sample."""
        if not samples:
            return RouterScores(np.zeros(0), np.zeros((0, len(self.card.classes))), list(self.card.classes))
        feats = self.features(samples)
        p = self.card.calibrator(self.heads.raw_score(feats))
        return RouterScores(p, self.heads.category_proba(feats), list(self.heads.classes))

    def verdicts(self, samples: Sequence[Sample], policy: Policy, /) -> list[Verdict]:
        """One verdict per sample: violative when ``p >= thresholds.decision``, deciding through ``policy``.

        The category of a violative verdict is the multi-class head's most likely violation; the
        confidence is the calibrated probability of the verdict's side (``p`` or ``1 - p``).
        Positional-only, so the bound method is a plain ``(samples, policy)`` predictor.
        """
        scores = self.score(samples)
        tops = scores.top_violation(self.card.benign)
        return [
            router_verdict(s, float(p), top, policy, self.model_id, violative=bool(p >= self.card.thresholds.decision))
            for s, p, top in zip(samples, scores.p_violative, tops, strict=True)
        ]

    def save(self, directory: str | Path) -> Path:
        """Write ``router.json`` and ``model.joblib`` into ``directory``; the router takes its name."""
        joblib = require("joblib", extra="router", purpose="saving the router")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        model_path = out / MODEL_FILE
        joblib.dump(self.heads, model_path, compress=3)
        self.card = self.card.model_copy(update={"model_sha256": _sha256_file(model_path)})
        (out / CARD_FILE).write_text(self.card.model_dump_json(indent=2), encoding="utf-8")
        self.name = out.resolve().name
        return out


def router_verdict(
    sample: Sample, p: float, top: str | None, policy: Policy, model_id: str, *, violative: bool
) -> Verdict:
    """The router's verdict on one sample with calibrated violation probability ``p``.

    A violative verdict names ``top`` (the most likely violation) and takes its policy action; a
    benign one allows. Below the policy's ``min_confidence`` the decision becomes review.
    """
    provenance = Provenance(
        model=model_id,
        policy_version=policy.version,
        policy_digest=policy.digest,
        prompt_digest="-",
        package_version=__version__,
    )
    flags: list[str] = []
    code = top if violative else policy.benign
    category = policy.find(code) if code else None
    if category is None:  # violative but no known violation class (e.g. the policy changed)
        return Verdict(
            sample_id=sample.id,
            decision=Decision.REVIEW,
            confidence=round(p, 4),
            status=ParseStatus.OK,
            stage=Stage.ROUTER,
            flags=[Flag.UNKNOWN_CATEGORY],
            summary=f"router: p(violation)={p:.3f}",
            provenance=provenance,
        )
    confidence = p if violative else 1.0 - p
    decision = category.action
    if confidence < policy.min_confidence and decision is not Decision.REVIEW:
        decision = Decision.REVIEW
        flags.append(Flag.LOW_CONFIDENCE)
    return Verdict(
        sample_id=sample.id,
        decision=decision,
        category=category.code,
        tag=category.tag,
        confidence=round(confidence, 4),
        status=ParseStatus.OK,
        stage=Stage.ROUTER,
        flags=flags,
        summary=f"router: p(violation)={p:.3f}",
        provenance=provenance,
    )


# --------------------------------------------------------------------------- training


def data_hash(samples: Sequence[Sample]) -> str:
    """sha256 over (id, label, title, OCR, ASR, comments) of every sample, sorted by id."""
    digest = hashlib.sha256()
    for s in sorted(samples, key=lambda s: s.id):
        row = [s.id, s.label or "", s.title, s.ocr, s.asr, list(s.comments)]
        digest.update(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
    return digest.hexdigest()


def labels_for(samples: Sequence[Sample], policy: Policy) -> tuple[np.ndarray, list[str]]:
    """Binary labels (1 = violative) and category codes; every sample needs a known label."""
    codes = []
    for s in samples:
        if not s.label:
            raise InputError(f"sample {s.id} has no label ('tag'); the router trains on labelled rows only")
        # labels may be tags (benchmark rows) or codes (reviewer feedback); by_tag explains unknown ones
        codes.append((policy.find(s.label) or policy.by_tag(s.label)).code)
    return np.array([c != policy.benign for c in codes], dtype=int), codes


def train_router(
    samples: Sequence[Sample],
    policy: Policy,
    config: RouterConfig | None = None,
    *,
    encoder: E5Embedder | None = None,
    features: Features | None = None,
) -> Router:
    """Train a router on labelled samples: cross-fitted scores -> calibrator and thresholds -> final heads.

    ``features`` may be passed pre-extracted (the benchmark script re-uses them across folds).
    Raises :class:`ConfigError` when the data cannot support training (too few rows of a class).
    """
    config = config or RouterConfig()
    started = time.perf_counter()
    y, codes = labels_for(samples, policy)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if min(n_pos, n_neg) < config.inner_folds:
        raise ConfigError(
            f"Need at least {config.inner_folds} violative and {config.inner_folds} benign rows to train a router "
            f"(got {n_pos} violative, {n_neg} benign); add labelled rows of the missing kind"
        )
    feats = features if features is not None else extract_features(samples, config, encoder)
    if EMBEDDING_FEATURES & set(config.features) and feats.embeddings is None:
        raise ConfigError("the router config uses embeddings (e5/knn) but the given features have none")
    t_features = time.perf_counter() - started
    oof = cross_fitted_scores(feats, y, config)
    calibrator = fit_calibrator(oof, y, config.calibration)
    calibrated = calibrator(oof)
    thresholds = choose_thresholds(calibrated, y, config)
    heads = Heads(config).fit(feats, y, codes)
    sklearn = require("sklearn", extra="router", purpose="training the router")
    card = RouterCard(
        library_versions={"scikit-learn": sklearn.__version__, "numpy": np.__version__},
        data_hash=data_hash(samples),
        n_train=len(samples),
        label_counts=dict(Counter(codes).most_common()),
        policy_version=policy.version,
        policy_digest=policy.digest,
        benign=policy.benign,
        config=config,
        features=_describe(config),
        embedding_model=EMBED_MODEL if EMBEDDING_FEATURES & set(config.features) else None,
        classes=list(heads.classes),
        calibrator=calibrator,
        thresholds=thresholds,
        metrics=oof_metrics(calibrated, y, thresholds),
        timing_s={"features": round(t_features, 2), "total": round(time.perf_counter() - started, 2)},
    )
    router = Router(card, heads)
    router.oof = (calibrated, y)
    return router


def cross_fitted_scores(feats: Features, y: np.ndarray, config: RouterConfig) -> np.ndarray:
    """Out-of-fold raw ensemble scores: each row scored by heads that never saw it."""
    model_selection = require("sklearn.model_selection", extra="router", purpose="training the router")
    folds = model_selection.StratifiedKFold(config.inner_folds, shuffle=True, random_state=config.seed)
    oof = np.zeros(len(y))
    for train, held in folds.split(np.zeros(len(y)), y):
        heads = Heads(config).fit(feats.take(train), y[train])
        oof[held] = heads.raw_score(feats.take(held))
    return oof


def choose_thresholds(p: np.ndarray, y: np.ndarray, config: RouterConfig) -> Thresholds:
    """Decision and cascade thresholds from held-out calibrated scores and the config's targets."""
    decision = 0.5 if config.min_recall is None else recall_threshold(p, y, config.min_recall)
    # The cascade never auto-allows what the router alone would call violative, nor auto-flags
    # what it would call benign: the bands only ever narrow the router's own decision.
    low = min(allow_threshold(p, y, config.max_missed), decision)
    high = max(flag_threshold(p, y, config.max_false_flag), low, decision)
    return Thresholds(decision=float(decision), allow_below=float(low), flag_at=float(high))


def oof_metrics(p: np.ndarray, y: np.ndarray, t: Thresholds) -> dict[str, float]:
    """Binary metrics of held-out scores at the decision threshold, and the cascade's shares."""
    pred = p >= t.decision
    pos, neg = y == 1, y == 0
    allowed, flagged = p < t.allow_below, p >= t.flag_at

    def share(num: np.ndarray, den: np.ndarray) -> float:
        return round(float(num.sum() / max(1, den.sum())), 4)

    return {
        "accuracy": round(float((pred == pos).mean()), 4),
        "violative_precision": share(pred & pos, pred),
        "violative_recall": share(pred & pos, pos),
        "benign_precision": share(~pred & neg, ~pred),
        "benign_recall": share(~pred & neg, neg),
        "auc": round(roc_auc(p, y), 4),
        "cascade_decided": round(float((allowed | flagged).mean()), 4),
        "cascade_violations_allowed": share(allowed & pos, pos),
        "cascade_benign_flagged": share(flagged & neg, neg),
    }


def _describe(config: RouterConfig) -> list[str]:
    out = []
    if "tfidf" in config.features:
        fields = ",".join(config.tfidf_fields)
        out.append(f"tfidf char {config.ngram_min}-{config.ngram_max}-grams per field ({fields}) -> logreg")
    if "e5" in config.features:
        out.append(f"{EMBED_MODEL} embedding of labelled, trimmed fields -> logreg")
    if "knn" in config.features:
        out.append(f"similarity-weighted vote of the {config.knn_k} nearest training rows (same embeddings)")
    return out


# --------------------------------------------------------------------------- loading


def load_router(path: str | Path) -> Router:
    """Load a router saved by :meth:`Router.save` (or ``kuaimod train-router``).

    Raises:
        ConfigError: the folder, the card or the model file is missing, unreadable or mismatched.
    """
    folder = Path(path)
    card_path = folder / CARD_FILE
    if not card_path.is_file():
        raise ConfigError(f"{folder} is not a router folder (no {CARD_FILE}); train one with `kuaimod train-router`")
    try:
        card = RouterCard.model_validate_json(card_path.read_text(encoding="utf-8"))
    except (ValidationError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{card_path}: not a valid router card ({str(exc).splitlines()[0]}); re-train it") from None
    if card.format != CARD_FORMAT:
        raise ConfigError(f"{card_path}: format '{card.format}' is not supported (expected {CARD_FORMAT}); re-train it")
    model_path = folder / MODEL_FILE
    if not model_path.is_file():
        raise ConfigError(f"{folder}: {MODEL_FILE} is missing; copy the whole router folder or re-train it")
    if card.model_sha256 and _sha256_file(model_path) != card.model_sha256:
        raise ConfigError(f"{model_path} does not match the sha256 in {CARD_FILE}; the folder was altered, re-train it")
    joblib = require("joblib", extra="router", purpose="loading the router")
    heads = joblib.load(model_path)
    if not isinstance(heads, Heads):
        raise ConfigError(f"{model_path} does not hold router heads; re-train it")
    return Router(card, heads, name=folder.resolve().name)


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


__all__ = [
    "CARD_FILE",
    "MODEL_FILE",
    "Router",
    "RouterCard",
    "RouterConfig",
    "RouterScores",
    "Thresholds",
    "choose_thresholds",
    "cross_fitted_scores",
    "data_hash",
    "load_router",
    "oof_metrics",
    "router_verdict",
    "train_router",
]
