"""Score calibration and threshold choice, in plain numpy (no scikit-learn needed at scoring time).

A :class:`Calibrator` maps a raw score (a model's probability, or a VLM's token probability) to
a calibrated probability of the positive class. Two methods:

* ``sigmoid`` (Platt scaling): a logistic fit on the logit of the raw score. Two parameters, so
  it is stable on a few hundred rows; our default below 1,000 calibration rows.
* ``isotonic``: a monotone step function (pool-adjacent-violators), interpolated linearly. No
  shape assumption, but it needs more data to be smooth.

The fitted calibrator is a small pydantic model, so it is stored as JSON inside a model card.

Thresholds for the cascade are chosen from targets on *held-out* scores (out-of-fold predictions
on the training data, or a calibration split), never on the data being evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

_EPS = 1e-6
ISOTONIC_MIN_ROWS = 1000


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return np.asarray(np.log(p / (1.0 - p)), dtype=np.float64)


class Calibrator(BaseModel):
    """A fitted calibration map from raw score to probability of the positive class."""

    method: Literal["sigmoid", "isotonic", "identity"]
    # sigmoid: p = 1 / (1 + exp(-(a * logit(s) + b)))
    a: float = 1.0
    b: float = 0.0
    # isotonic: knots (x ascending, y non-decreasing), linear interpolation between them
    x: list[float] = Field(default_factory=list)
    y: list[float] = Field(default_factory=list)

    def __call__(self, scores: Sequence[float] | np.ndarray) -> np.ndarray:
        """Calibrated probabilities, same shape as ``scores``."""
        s = np.asarray(scores, dtype=np.float64)
        if self.method == "sigmoid":
            return np.asarray(1.0 / (1.0 + np.exp(-(self.a * _logit(s) + self.b))))
        if self.method == "isotonic" and self.x:
            return np.asarray(np.interp(s, self.x, self.y))
        return np.clip(s, 0.0, 1.0)


def fit_calibrator(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    method: Literal["auto", "sigmoid", "isotonic"] = "auto",
) -> Calibrator:
    """Fit a calibrator on held-out ``scores`` in [0, 1] and binary ``labels`` (1 = positive).

    ``auto`` picks isotonic from 1,000 rows up and Platt scaling below. With a single class in
    ``labels`` there is nothing to learn from, and the identity map is returned.
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(labels, dtype=np.float64)
    if s.shape != t.shape or s.ndim != 1:
        raise ValueError("scores and labels must be 1-D arrays of the same length")
    if len(s) == 0 or t.min() == t.max():
        return Calibrator(method="identity")
    if method == "auto":
        method = "isotonic" if len(s) >= ISOTONIC_MIN_ROWS else "sigmoid"
    if method == "isotonic":
        x, y = _pool_adjacent_violators(s, t)
        return Calibrator(method="isotonic", x=x, y=y)
    a, b = _platt(_logit(s), t)
    return Calibrator(method="sigmoid", a=a, b=b)


def _platt(z: np.ndarray, t: np.ndarray, iterations: int = 100) -> tuple[float, float]:
    """Newton's method for logistic regression on one feature, with Platt's smoothed targets.

    Each Newton step is halved until the log-loss does not increase: plain Newton from (1, 0)
    diverges when the scores are far from calibrated (e.g. an over-confident VLM whose 0.99 is
    right 60% of the time), because the curvature is tiny where the start predicts 0 or 1.
    """
    n_pos, n_neg = float(t.sum()), float(len(t) - t.sum())
    # Platt's targets keep the fit finite when the scores separate the classes perfectly.
    target = np.where(t > 0.5, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

    def loss(a: float, b: float) -> float:
        m = a * z + b
        return float(np.sum(np.logaddexp(0.0, m) - target * m))

    a, b = 1.0, 0.0
    current = loss(a, b)
    for _ in range(iterations):
        p = 0.5 * (1.0 + np.tanh(0.5 * (a * z + b)))  # the logistic function, without overflow
        w = np.maximum(p * (1.0 - p), 1e-12)
        grad = np.array([np.sum((p - target) * z), np.sum(p - target)])
        hess = np.array([[np.sum(w * z * z), np.sum(w * z)], [np.sum(w * z), np.sum(w)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-10:
            trial = loss(a - scale * float(step[0]), b - scale * float(step[1]))
            if trial <= current:
                break
            scale *= 0.5
        else:
            break  # no descent direction left: at the optimum up to rounding
        a, b, current = a - scale * float(step[0]), b - scale * float(step[1]), trial
        if float(np.abs(scale * step).max()) < 1e-10:
            break
    return a, b


def _pool_adjacent_violators(s: np.ndarray, t: np.ndarray) -> tuple[list[float], list[float]]:
    order = np.argsort(s, kind="mergesort")
    xs, ts = s[order], t[order]
    # blocks of (sum of targets, count, mean x); merge while a block's mean exceeds the next one's
    sums: list[float] = []
    counts: list[float] = []
    xsum: list[float] = []
    for xv, tv in zip(xs, ts, strict=True):
        sums.append(float(tv))
        counts.append(1.0)
        xsum.append(float(xv))
        while len(sums) > 1 and sums[-2] / counts[-2] >= sums[-1] / counts[-1]:
            s_last, c_last, x_last = sums.pop(), counts.pop(), xsum.pop()
            sums[-1] += s_last
            counts[-1] += c_last
            xsum[-1] += x_last
    knots_x = [xv / c for xv, c in zip(xsum, counts, strict=True)]
    knots_y = [sv / c for sv, c in zip(sums, counts, strict=True)]
    return knots_x, knots_y


# --------------------------------------------------------------------------- thresholds


def allow_threshold(scores: np.ndarray, labels: np.ndarray, max_missed: float) -> float:
    """The largest ``t`` such that auto-allowing ``score < t`` lets through at most ``max_missed``.

    ``max_missed`` is a share of the positive (violative) rows, e.g. 0.02. Returns 0.0 (allow
    nothing) when there are no positives to measure against.
    """
    positives = np.sort(np.asarray(scores, dtype=np.float64)[np.asarray(labels) == 1])
    if len(positives) == 0:
        return 0.0
    k = math.floor(max_missed * len(positives) + 1e-9)
    # Rows strictly below positives[k] include at most k positives (ties only lower the count).
    return float(positives[k]) if k < len(positives) else 1.0 + _EPS


def flag_threshold(scores: np.ndarray, labels: np.ndarray, max_false_flag: float) -> float:
    """The smallest ``t`` such that auto-flagging ``score >= t`` flags at most ``max_false_flag``.

    ``max_false_flag`` is a share of the negative (benign) rows. Returns a value above 1 (flag
    nothing) when there are no negatives to measure against.
    """
    negatives = np.sort(np.asarray(scores, dtype=np.float64)[np.asarray(labels) == 0])[::-1]
    if len(negatives) == 0:
        return 1.0 + _EPS
    k = math.floor(max_false_flag * len(negatives) + 1e-9)
    if k >= len(negatives):
        return 0.0
    # Flag only rows strictly above the (k+1)-th highest negative score.
    return float(np.nextafter(negatives[k], np.inf))


def recall_threshold(scores: np.ndarray, labels: np.ndarray, min_recall: float) -> float:
    """The largest ``t`` such that predicting positive for ``score >= t`` reaches ``min_recall``."""
    positives = np.sort(np.asarray(scores, dtype=np.float64)[np.asarray(labels) == 1])
    if len(positives) == 0:
        return 0.5
    missed = math.floor((1.0 - min_recall) * len(positives) + 1e-9)
    return float(positives[min(missed, len(positives) - 1)])


def roc_auc(p: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    pos, neg = p[y == 1], p[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(values):  # average ranks over ties
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


__all__ = [
    "Calibrator",
    "allow_threshold",
    "fit_calibrator",
    "flag_threshold",
    "recall_threshold",
    "roc_auc",
]
