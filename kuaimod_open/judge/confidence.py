"""The VLM's own confidence in its category, from the token probabilities of its answer.

A model's self-reported ``"confidence": 0.9`` is a number it wrote, not a measurement. When the
backend exposes token log-probabilities (``hf`` output scores, ``openai`` logprobs; both need
``GenerateConfig(logprobs=True)``), we can read how probable the model found the category it wrote:
the product of the probabilities of the tokens that spell the category value in its final JSON
verdict, i.e. ``P(category | prompt, reasoning)`` under the model.

Such probabilities rank verdicts well but are usually over-confident after a long chain of
thought; to turn them into calibrated probabilities of being right, fit
:func:`fit_confidence_calibration` on (token confidence, verdict was correct) pairs from a labelled
run (``kuaimod calibrate-confidence``) and apply it (``kuaimod moderate --confidence-calibration``):
verdicts then carry ``calibrated_confidence``, which the review queue ranks by.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from kuaimod_open.core.calibration import Calibrator, fit_calibrator, roc_auc
from kuaimod_open.errors import ConfigError, InputError
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.policy import Policy
from kuaimod_open.judge.verdict import ParseStatus, Verdict

_CATEGORY_VALUE = re.compile(r'"(?:category|tag|label)"\s*:\s*"([^"]{1,80})"')


def category_confidence(
    token_logprobs: Sequence[tuple[str, float]] | None, raw_text: str, verdict: Verdict
) -> float | None:
    """The model's probability of the category value it wrote in its last JSON verdict, or None.

    None when there are no token log-probabilities, when the verdict was not parsed from JSON
    (``status != ok``), or when the category value cannot be located in the tokens.
    """
    if not token_logprobs or verdict.status is not ParseStatus.OK or verdict.category is None:
        return None
    pieces = [text for text, _ in token_logprobs]
    joined = "".join(pieces)
    # Decoding tokens one by one can differ from the decoded answer (split multi-byte characters):
    # search the token text itself, and only trust it if the answer says the same thing.
    wanted = {verdict.category.lower()} | ({verdict.tag.lower()} if verdict.tag else set())
    match = None
    for candidate in _CATEGORY_VALUE.finditer(joined):
        if candidate.group(1).strip().lower() in wanted:
            match = candidate
    if match is None or not any(m.group(1).strip().lower() in wanted for m in _CATEGORY_VALUE.finditer(raw_text)):
        return None
    start, end = match.span(1)
    total, offset, used = 0.0, 0, 0
    for text, logprob in token_logprobs:
        token_start, offset = offset, offset + len(text)
        if token_start < end and offset > start:  # the token overlaps the category value
            total += logprob
            used += 1
    if used == 0 or not math.isfinite(total):
        return None
    return round(math.exp(min(0.0, total)), 6)


CALIBRATION_FORMAT = "kuaimod-confidence-calibration/1"
MIN_PAIRS = 20  # below this a calibration curve is noise


class ConfidenceCalibration(BaseModel):
    """A fitted map from a VLM's token confidence to the probability that its category is right.

    Fit on a labelled run (``kuaimod calibrate-confidence``), applied by ``kuaimod moderate
    --confidence-calibration``; it is only valid for the model, adapter, prompt and policy it was fit on.
    """

    format: str = CALIBRATION_FORMAT
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    calibrator: Calibrator
    n: int = Field(description="verdicts with a token confidence used for the fit")
    skipped: int = Field(description="verdicts without a token confidence (unparsed, no logprobs)")
    accuracy: float = Field(description="share of the fitted verdicts whose category was right")
    auc: float | None = Field(description="how well token confidence ranks right above wrong answers")
    ece_before: float = Field(description="expected calibration error of the raw token confidence")
    ece_after: float = Field(description="the same after calibration, in-sample (optimistic)")
    models: list[str] = Field(default_factory=list)
    adapters: list[str] = Field(default_factory=list)
    policy_versions: list[str] = Field(default_factory=list)
    prompt_digests: list[str] = Field(default_factory=list)

    @property
    def digest(self) -> str:
        """Short sha256 of the fitted map (recorded in verdict provenance)."""
        return hashlib.sha256(self.calibrator.model_dump_json().encode("utf-8")).hexdigest()[:16]

    def apply(self, token_confidence: float | None) -> float | None:
        """The calibrated probability for one verdict (None stays None)."""
        if token_confidence is None:
            return None
        return round(float(self.calibrator([token_confidence])[0]), 6)

    def save(self, path: str | Path) -> Path:
        """Write as JSON."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.model_dump_json(indent=2), encoding="utf-8")
        return out


def expected_calibration_error(p: Sequence[float] | np.ndarray, y: Sequence[int] | np.ndarray, bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    p_arr, y_arr = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(p_arr) == 0:
        return 0.0
    which = np.minimum((p_arr * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(y_arr[mask].mean() - p_arr[mask].mean())
    return float(total / len(p_arr))


def calibration_pairs(
    verdicts: Sequence[Verdict], samples: Sequence[Sample], policy: Policy
) -> tuple[np.ndarray, np.ndarray, int]:
    """(token confidence, category was right) for each verdict that has both, and how many were skipped.

    Raises:
        InputError: a verdict's sample is not among ``samples`` or has no gold label.
    """
    gold: dict[str, str] = {}
    for sample in samples:
        if sample.label is not None:
            cat = policy.find(sample.label)
            if cat is None:
                raise InputError(f"sample {sample.id}: label {sample.label!r} is not a category of the policy")
            gold[sample.id] = cat.code
    scores, right, skipped = [], [], 0
    for verdict in verdicts:
        if verdict.sample_id not in gold:
            raise InputError(f"verdict for {verdict.sample_id!r} has no labelled sample in the data file")
        if verdict.token_confidence is None or verdict.category is None:
            skipped += 1
            continue
        scores.append(verdict.token_confidence)
        right.append(int(verdict.category == gold[verdict.sample_id]))
    return np.asarray(scores, dtype=np.float64), np.asarray(right, dtype=np.int64), skipped


def fit_confidence_calibration(
    verdicts: Sequence[Verdict],
    samples: Sequence[Sample],
    policy: Policy,
    method: Literal["auto", "sigmoid", "isotonic"] = "auto",
) -> ConfidenceCalibration:
    """Fit the token-confidence calibration on a labelled run (see :class:`ConfidenceCalibration`).

    Raises:
        InputError: fewer than ``MIN_PAIRS`` verdicts carry a token confidence (run with ``--logprobs``),
            or the labels do not match the verdicts.
    """
    scores, right, skipped = calibration_pairs(verdicts, samples, policy)
    if len(scores) < MIN_PAIRS:
        raise InputError(
            f"only {len(scores)} verdicts carry a token confidence ({skipped} without); need at least {MIN_PAIRS}. "
            "Produce them with logprobs on (kuaimod eval/moderate --logprobs) on a labelled set"
        )
    calibrator = fit_calibrator(scores, right, method)
    both_classes = 0 < right.sum() < len(right)
    used = [v for v in verdicts if v.token_confidence is not None and v.category is not None]
    return ConfidenceCalibration(
        calibrator=calibrator,
        n=len(scores),
        skipped=skipped,
        accuracy=float(right.mean()),
        auc=roc_auc(scores, right) if both_classes else None,
        ece_before=expected_calibration_error(scores, right),
        ece_after=expected_calibration_error(calibrator(scores), right),
        models=sorted({v.provenance.model for v in used}),
        adapters=sorted({v.provenance.adapter for v in used if v.provenance.adapter}),
        policy_versions=sorted({v.provenance.policy_version for v in used}),
        prompt_digests=sorted({v.provenance.prompt_digest for v in used}),
    )


def load_confidence_calibration(path: str | Path) -> ConfidenceCalibration:
    """Read a calibration written by :meth:`ConfidenceCalibration.save`.

    Raises:
        ConfigError: the file is missing or is not a confidence calibration.
    """
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
            raise ValueError(f"format is not {CALIBRATION_FORMAT!r}")
        return ConfidenceCalibration.model_validate(data)
    except (OSError, ValueError, ValidationError) as exc:
        raise ConfigError(
            f"{file}: not a confidence calibration ({exc}); create one with `kuaimod calibrate-confidence`"
        ) from exc


__all__ = [
    "ConfidenceCalibration",
    "calibration_pairs",
    "category_confidence",
    "expected_calibration_error",
    "fit_confidence_calibration",
    "load_confidence_calibration",
]
