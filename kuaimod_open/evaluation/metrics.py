"""Evaluate verdicts against gold labels: the official KuaiMod numbers plus what it takes to improve.

``evaluate(samples, verdicts, policy)`` returns an :class:`EvalReport` with

- the two official scripts' numbers (:mod:`kuaimod_open.evaluation.official`) computed from the verdicts
  converted to the official prediction format (so they equal what the scripts print for the
  prediction files we also write),
- coverage of the multi-class script and a *strict* binary score in which an unparsed or failed
  verdict counts as wrong instead of being skipped or counted as "violative",
- per-category precision / recall / F1, macro-F1, the confusion matrix, the share of verdicts that
  went to review, were unparsed or failed, and latency and token statistics.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from kuaimod_open import __version__
from kuaimod_open.errors import InputError
from kuaimod_open.evaluation.official import (
    BENIGN_JUDGEMENT,
    VIOLATIVE_JUDGEMENT,
    OfficialBinary,
    OfficialMulti,
    official_binary,
    official_multi,
)
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.policy import Decision, Policy
from kuaimod_open.judge.verdict import ParseStatus, Verdict

NO_ANSWER = "NO_ANSWER"  # the confusion-matrix column for unparsed and failed verdicts


class CategoryScore(BaseModel):
    """Precision, recall and F1 of one category (one-vs-rest)."""

    code: str
    tag: str
    support: int
    predicted: int
    precision: float
    recall: float
    f1: float


class StrictBinary(BaseModel):
    """Binary scores where a verdict without a category (unparsed, error) counts as wrong."""

    n: int
    accuracy: float
    violative_recall: float
    violative_precision: float
    benign_recall: float
    benign_precision: float
    answered: int
    violative: int = Field(default=0, description="gold violative samples")
    benign: int = Field(default=0, description="gold benign samples")

    @property
    def majority_accuracy(self) -> float:
        """Accuracy of always answering the more frequent gold class (the trivial baseline)."""
        return max(self.violative, self.benign) / self.n if self.n else 0.0


class Distribution(BaseModel):
    """Summary statistics of a per-sample number (latency, tokens)."""

    n: int
    mean: float
    p50: float
    p95: float


class EvalReport(BaseModel):
    """Everything an evaluation run produced; written as ``report.json``."""

    n: int
    text_only: bool
    benign: str = Field(default="", description="policy code of the benign class")
    official_binary: OfficialBinary
    official_multi: OfficialMulti
    strict_binary: StrictBinary
    categories: list[CategoryScore]
    macro_f1: float
    category_accuracy: float
    confusion_labels: list[str]
    confusion: list[list[int]] = Field(description="rows: gold code, columns: predicted code (+ NO_ANSWER)")
    decisions: dict[str, int]
    statuses: dict[str, int]
    stages: dict[str, int]
    review_share: float
    unparsed_share: float
    error_share: float
    latency_s: Distribution | None = None
    input_tokens: Distribution | None = None
    output_tokens: Distribution | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    package_version: str = __version__


def binary_judgement(verdict: Verdict, policy: Policy) -> str:
    """The official binary-format judgement: 是 for benign, 否 for a violation, else the raw answer.

    An unparsed answer keeps its raw text, exactly as another group's free-form response would be
    scored: the official script then counts it as violative overall but skips it per group.
    """
    if verdict.category is None:
        return verdict.raw_output or verdict.status.value
    return BENIGN_JUDGEMENT if verdict.category == policy.benign else VIOLATIVE_JUDGEMENT


def multi_judgement(verdict: Verdict) -> str:
    """The official multi-class judgement: the category's tag, else the raw answer to search."""
    return verdict.tag if verdict.tag is not None else verdict.raw_output


def evaluate(
    samples: Sequence[Sample],
    verdicts: Sequence[Verdict],
    policy: Policy,
    *,
    config: dict[str, Any] | None = None,
) -> EvalReport:
    """Score ``verdicts`` against the gold labels of ``samples`` (matched by sample id).

    Raises:
        InputError: a sample has no gold label, or a verdict is missing for a sample.
        PolicyError: a gold tag is not in the policy.
    """
    by_id = {v.sample_id: v for v in verdicts}
    pairs: list[tuple[str, Verdict]] = []
    for sample in samples:
        if sample.label is None:
            raise InputError(f"sample {sample.id} has no gold label ('tag'); evaluation needs labelled data")
        verdict = by_id.get(sample.id)
        if verdict is None:
            raise InputError(f"no verdict for sample {sample.id}; run the moderation first (or use --resume)")
        policy.by_tag(sample.label)  # unknown gold tags are a clear error, not a silent skip
        pairs.append((sample.label, verdict))
    if not pairs:
        raise InputError("nothing to evaluate: no samples")

    gold_codes = [policy.by_tag(tag).code for tag, _ in pairs]
    pred_codes = [v.category or NO_ANSWER for _, v in pairs]
    labels = [*policy.codes(), NO_ANSWER]
    index = {code: i for i, code in enumerate(labels)}
    confusion = [[0] * len(labels) for _ in policy.codes()]
    for gold, pred in zip(gold_codes, pred_codes, strict=True):
        confusion[index[gold]][index[pred]] += 1

    categories = [_category_score(code, policy.category(code).tag, gold_codes, pred_codes) for code in policy.codes()]
    scored = [c for c in categories if c.support > 0 or c.predicted > 0]
    verdict_list = [v for _, v in pairs]
    n = len(pairs)
    statuses = Counter(str(v.status) for v in verdict_list)
    return EvalReport(
        n=n,
        text_only=all(not s.frames and s.video is None for s in samples),
        benign=policy.benign,
        official_binary=official_binary((tag, binary_judgement(v, policy)) for tag, v in pairs),
        official_multi=official_multi((tag, multi_judgement(v)) for tag, v in pairs),
        strict_binary=_strict_binary(gold_codes, pred_codes, policy.benign),
        categories=categories,
        macro_f1=statistics.fmean(c.f1 for c in scored) if scored else 0.0,
        category_accuracy=sum(g == p for g, p in zip(gold_codes, pred_codes, strict=True)) / n,
        confusion_labels=labels,
        confusion=confusion,
        decisions=dict(Counter(str(v.decision) for v in verdict_list)),
        statuses=dict(statuses),
        stages=dict(Counter(str(v.stage) for v in verdict_list)),
        review_share=sum(v.decision is Decision.REVIEW for v in verdict_list) / n,
        unparsed_share=statuses.get(str(ParseStatus.UNPARSED), 0) / n,
        error_share=statuses.get(str(ParseStatus.ERROR), 0) / n,
        latency_s=_distribution([v.latency_s for v in verdict_list]),
        input_tokens=_distribution([v.input_tokens for v in verdict_list]),
        output_tokens=_distribution([v.output_tokens for v in verdict_list]),
        config=config or {},
        provenance=_provenance(verdict_list),
    )


def _category_score(code: str, tag: str, gold: list[str], pred: list[str]) -> CategoryScore:
    tp = sum(g == code and p == code for g, p in zip(gold, pred, strict=True))
    support, predicted = gold.count(code), pred.count(code)
    precision = tp / predicted if predicted else 0.0
    recall = tp / support if support else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return CategoryScore(
        code=code, tag=tag, support=support, predicted=predicted, precision=precision, recall=recall, f1=f1
    )


def _strict_binary(gold: list[str], pred: list[str], benign: str) -> StrictBinary:
    n = len(gold)
    answered = [(g, p) for g, p in zip(gold, pred, strict=True) if p != NO_ANSWER]
    gold_v = sum(g != benign for g in gold)
    gold_b = n - gold_v
    caught = sum(g != benign and p != benign for g, p in answered)
    passed = sum(g == benign and p == benign for g, p in answered)
    flagged = sum(p != benign for _, p in answered)
    allowed = sum(p == benign for _, p in answered)
    return StrictBinary(
        n=n,
        accuracy=(caught + passed) / n,
        violative_recall=caught / gold_v if gold_v else 0.0,
        violative_precision=caught / flagged if flagged else 0.0,
        benign_recall=passed / gold_b if gold_b else 0.0,
        benign_precision=passed / allowed if allowed else 0.0,
        answered=len(answered),
        violative=gold_v,
        benign=gold_b,
    )


def _distribution(values: Sequence[float | int | None]) -> Distribution | None:
    present = sorted(float(v) for v in values if v is not None)
    if not present:
        return None
    p95 = present[min(len(present) - 1, round(0.95 * (len(present) - 1)))]
    return Distribution(n=len(present), mean=statistics.fmean(present), p50=statistics.median(present), p95=p95)


def _provenance(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """The distinct models, policies and prompts behind the verdicts (normally one of each)."""
    fields = ("model", "adapter", "policy_version", "policy_digest", "prompt_digest", "package_version")
    return {f: sorted({str(getattr(v.provenance, f)) for v in verdicts}) for f in fields}


__all__ = [
    "NO_ANSWER",
    "CategoryScore",
    "EvalReport",
    "StrictBinary",
    "binary_judgement",
    "evaluate",
    "multi_judgement",
]
