"""The cascade: a cheap router decides the clear cases, the VLM (or a human) the rest.

Two thresholds on the router's calibrated probability of violation ``p`` make three bands::

    p < allow_below            -> auto-allow   (stage = router, decision = allow)
    p >= flag_at               -> auto-flag    (stage = router, decision = the policy action of the
                                                router's most likely violation category)
    otherwise                  -> escalate     (to the VLM through pipeline.moderate; with no VLM
                                                configured: decision = review, a human queue)

The thresholds come from the router's card, where training chose them from targets such as
"at most 2% of violations auto-allowed" on cross-fitted scores; a :class:`CascadeConfig` (or the
CLI) can override them. An escalated video is never allowed by the router.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from pydantic import BaseModel, Field, ValidationError, model_validator

from kuaimod_open.errors import ConfigError
from kuaimod_open.first_stage.router import Router, load_router, router_verdict
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.backends.base import Backend
from kuaimod_open.judge.flags import Flag
from kuaimod_open.judge.pipeline import ModerationConfig, PrecedentLookup, moderate
from kuaimod_open.judge.policy import Decision, Policy
from kuaimod_open.judge.prompt import Template
from kuaimod_open.judge.verdict import Verdict


class Band(StrEnum):
    """Where the router sends a sample."""

    ALLOW = "allow"
    FLAG = "flag"
    ESCALATE = "escalate"


class CascadeConfig(BaseModel):
    """Threshold overrides; ``None`` takes the value from the router's model card."""

    allow_below: float | None = Field(default=None, ge=0, le=1)
    flag_at: float | None = Field(default=None, ge=0, le=1.001)

    @model_validator(mode="after")
    def _ordered(self) -> CascadeConfig:
        if self.allow_below is not None and self.flag_at is not None and self.allow_below > self.flag_at:
            raise ValueError(f"allow_below ({self.allow_below}) must not exceed flag_at ({self.flag_at})")
        return self

    def thresholds(self, router: Router) -> tuple[float, float]:
        """``(allow_below, flag_at)`` with the card's values filling the gaps."""
        low = self.allow_below if self.allow_below is not None else router.card.thresholds.allow_below
        high = self.flag_at if self.flag_at is not None else router.card.thresholds.flag_at
        if low > high:
            raise ConfigError(
                f"cascade thresholds overlap: allow below {low:.3f} but flag from {high:.3f}; "
                "pass both --allow-below and --flag-at, with allow-below <= flag-at"
            )
        return low, high


def cascade_config(allow_below: float | None = None, flag_at: float | None = None) -> CascadeConfig:
    """A :class:`CascadeConfig` from command-line overrides; bad values are a :class:`ConfigError`."""
    try:
        return CascadeConfig(allow_below=allow_below, flag_at=flag_at)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"cascade thresholds: {problem}; pass --allow-below <= --flag-at") from None


def bands(p: Sequence[float] | np.ndarray, allow_below: float, flag_at: float) -> list[Band]:
    """The band of each calibrated score."""
    return [Band.ALLOW if x < allow_below else Band.FLAG if x >= flag_at else Band.ESCALATE for x in p]


def run_cascade(
    samples: Sequence[Sample],
    policy: Policy,
    router: Router,
    *,
    backend: Backend | None = None,
    template: Template | None = None,
    moderation: ModerationConfig | None = None,
    config: CascadeConfig | None = None,
    precedents: PrecedentLookup | None = None,
) -> list[Verdict]:
    """One verdict per sample, in input order; ``stage`` says whether the router or the VLM decided.

    Escalated samples go to :func:`kuaimod_open.judge.pipeline.moderate` with ``backend`` and
    ``template`` when both are given; otherwise they become ``decision=review`` verdicts carrying
    the router's score and best-guess category for the reviewer.
    """
    if (backend is None) != (template is None):
        raise ConfigError("the cascade needs both a VLM backend and a prompt template, or neither")
    low, high = (config or CascadeConfig()).thresholds(router)
    scores = router.score(samples)
    tops = scores.top_violation(router.card.benign)
    results: list[Verdict | None] = [None] * len(samples)
    escalated: list[int] = []
    routed = bands(scores.p_violative, low, high)
    for i, (sample, score, band) in enumerate(zip(samples, scores.p_violative, routed, strict=True)):
        p = float(score)
        if band is Band.ESCALATE:
            escalated.append(i)
            if backend is None:
                guess = router_verdict(sample, p, tops[i], policy, router.model_id, violative=p >= 0.5)
                results[i] = guess.model_copy(
                    update={"decision": Decision.REVIEW, "flags": [*guess.flags, Flag.ESCALATED, Flag.NO_VLM]}
                )
            continue
        verdict = router_verdict(sample, p, tops[i], policy, router.model_id, violative=band is Band.FLAG)
        results[i] = verdict.model_copy(update={"flags": [*verdict.flags, Flag(f"auto_{band.value}")]})
    if backend is not None and template is not None and escalated:
        vlm = moderate([samples[i] for i in escalated], policy, backend, template, moderation, precedents=precedents)
        for i, verdict in zip(escalated, vlm, strict=True):
            results[i] = verdict.model_copy(update={"flags": [*verdict.flags, Flag.ESCALATED]})
    return [v for v in results if v is not None]


@dataclass(frozen=True)
class FirstStage:
    """Where the cascade's router lives and the threshold overrides: small and picklable (Ray actors)."""

    router: str  # a router folder; on a cluster, a path on storage every node can read
    allow_below: float | None = None
    flag_at: float | None = None

    def load(self) -> tuple[Router, CascadeConfig]:
        """Load the router and check the thresholds against its card (errors are ConfigErrors)."""
        loaded = load_router(self.router)
        cascade = cascade_config(self.allow_below, self.flag_at)
        cascade.thresholds(loaded)
        return loaded, cascade


def cascade_judge(
    first_stage: tuple[Router, CascadeConfig],
    policy: Policy,
    backend: Backend,
    template: Template,
    moderation: ModerationConfig,
    precedents: PrecedentLookup | None = None,
) -> Callable[[list[Sample]], list[Verdict]]:
    """The batch judge of a cascade job (runner, Ray actor, service): the router first, the VLM for the rest."""
    router, cascade = first_stage
    # Prepared samples already carry frames and OCR/ASR: the VLM call must not extract again.
    infer = dataclasses.replace(moderation, extract=None, hashing=None)

    def judge(batch: list[Sample]) -> list[Verdict]:
        return run_cascade(
            batch,
            policy,
            router,
            backend=backend,
            template=template,
            moderation=infer,
            config=cascade,
            precedents=precedents,
        )

    return judge


def band_metrics(p: np.ndarray, y: np.ndarray, allow_below: float, flag_at: float) -> dict[str, float]:
    """How a pair of thresholds splits labelled scores (``y`` = 1 for violative).

    ``decided`` is the share of all samples the router decides; ``violations_allowed`` the share
    of violative samples auto-allowed; ``benign_flagged`` the share of benign samples auto-flagged;
    ``allowed_violative_rate`` the share of auto-allowed samples that were in fact violative.
    """
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=int)
    allowed, flagged = p < allow_below, p >= flag_at
    pos, neg = y == 1, y == 0
    return {
        "decided": float((allowed | flagged).mean()) if len(p) else 0.0,
        "allowed": float(allowed.mean()) if len(p) else 0.0,
        "flagged": float(flagged.mean()) if len(p) else 0.0,
        "violations_allowed": float((allowed & pos).sum() / max(1, pos.sum())),
        "benign_flagged": float((flagged & neg).sum() / max(1, neg.sum())),
        "allowed_violative_rate": float((allowed & pos).sum() / max(1, allowed.sum())),
    }


__all__ = [
    "Band",
    "CascadeConfig",
    "FirstStage",
    "band_metrics",
    "bands",
    "cascade_config",
    "cascade_judge",
    "run_cascade",
]
