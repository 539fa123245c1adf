"""Review handlers: plain functions over the store, called by the Gradio app and by tests.

Decisions go through :func:`kuaimod_open.loop.feedback.add_feedback` (validated against the active
policy), precedents through :func:`kuaimod_open.loop.precedents.add_precedent`, and every action is
written to the audit trail with the reviewer's name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kuaimod_open.core.embedding import Embedder
from kuaimod_open.errors import KuaimodError
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.policy import Decision, Policy, default_policy_path
from kuaimod_open.judge.verdict import Verdict
from kuaimod_open.loop.feedback import FeedbackEvent, FeedbackKind, add_feedback, stored_samples
from kuaimod_open.loop.precedents import add_precedent
from kuaimod_open.loop.registry import active_policy
from kuaimod_open.loop.store import Store

from . import render
from .audit import audit_table, log_action
from .config import ReviewConfig
from .media import resolve_roots, safe_video, store_frame_roots
from .queue import HIGH_SEVERITY, QueueItem, SortKey, review_queue, severity_of

SOURCE = "review-ui"
REASON_CODES = (
    "wrong_category",
    "not_violating",
    "missed_violation",
    "too_strict",
    "too_lenient",
    "needs_context",
    "news_or_education",
    "satire_or_art",
    "policy_gap",
    "other",
)
DEFAULT_DECISION = "policy default"


class ReviewError(KuaimodError):
    """An action that cannot be done as asked; the message tells the reviewer why."""


class ReviewContext:
    """The store, the settings and the things derived from them that handlers share."""

    def __init__(self, config: ReviewConfig, store: Store | None = None) -> None:
        self.config = config
        self.store = store if store is not None else Store(config.db)
        self._embedder: Embedder | None = None

    def policy(self) -> tuple[Policy, Path]:
        """The active policy (the shipped one is registered and activated on first use)."""
        return active_policy(self.store, default=self.config.policy_default or default_policy_path())

    def roots(self) -> tuple[Path, ...]:
        """Folders media may be served from: configured roots, plus recorded frame folders when trusted."""
        roots = resolve_roots(self.config.media_roots)
        if self.config.store_frame_roots:
            roots += tuple(r for r in store_frame_roots(self.store) if r not in roots)
        return roots

    def embedder(self) -> Embedder | None:
        """The precedent embedder, when configured (loaded once)."""
        if self.config.use_embedder and self._embedder is None:
            from kuaimod_open.core.embedding import E5Embedder

            self._embedder = E5Embedder()
        return self._embedder


def resolve_reviewer(username: str | None, typed: str, default: str = "") -> str:
    """Who acts: the logged-in user when there is one (cannot be overridden), else the typed name."""
    name = (username or typed or default or "").strip()
    if not name:
        raise ReviewError("enter your name in the 'Reviewer' box first: every decision is recorded with it")
    return name[:200]


# --------------------------------------------------------------------------- queue and item


def queue_items(
    ctx: ReviewContext, sort: str = "uncertainty", category: str = "", version: str = ""
) -> list[QueueItem]:
    """The review queue with the UI's filters ('' or 'all' means no filter)."""
    policy, _ = ctx.policy()
    return review_queue(
        ctx.store,
        policy,
        low_confidence=ctx.config.low_confidence,
        category=None if category in ("", "all") else category,
        policy_version=None if version in ("", "all") else version,
        sort=SortKey(sort or "uncertainty"),
    )


def latest_verdict(store: Store, sample_id: str) -> tuple[int, Verdict, dict[str, Any]]:
    """The newest verdict of a sample: row id, verdict, and the raw stored JSON."""
    t = store.table("verdicts")
    query = store.sa.select(t.c.id, t.c.payload).where(t.c.sample_id == sample_id).order_by(t.c.id.desc()).limit(1)
    with store.engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        raise ReviewError(f"no verdict stored for sample {sample_id!r}")
    return int(row.id), Verdict.model_validate_json(row.payload), json.loads(row.payload)


def load_sample(store: Store, sample_id: str) -> Sample:
    """The stored sample, or an empty one (text-less) when only its verdict was recorded."""
    return stored_samples(store, [sample_id]).get(sample_id) or Sample(id=sample_id)


def shown_precedents(store: Store, raw: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """Precedents a verdict records as shown (``precedents``; older payloads may lack the field)."""
    ids = raw.get("precedents", raw.get("precedent_ids", (raw.get("provenance") or {}).get("precedent_ids")))
    if ids is None:
        return [], False
    wanted = [int(i) for i in ids if str(i).isdigit()]
    t = store.table("precedents")
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(store.sa.select(t).where(t.c.id.in_(wanted)))]
    return sorted(rows, key=lambda r: wanted.index(r["id"])), True


@dataclass
class ItemView:
    """Everything the item panel shows."""

    sample_id: str
    verdict_id: int
    header: str
    video: str | None
    video_note: str
    frames: str
    text: str
    verdict: str
    rationale: str
    precedents: str
    provenance: str
    blurred: bool
    category: str | None
    audit: list[list[str]] = field(default_factory=list)


def item_view(ctx: ReviewContext, sample_id: str, *, reveal: bool = False) -> ItemView:
    """The selected item: video, frames (blurred for high severity unless revealed), text, verdict."""
    policy, _ = ctx.policy()
    verdict_id, verdict, raw = latest_verdict(ctx.store, sample_id)
    sample = load_sample(ctx.store, sample_id)
    roots = ctx.roots()
    blurred = not reveal and severity_of(verdict, policy) in HIGH_SEVERITY
    video = safe_video(sample.video, roots)
    if sample.video is None:
        video_note = "No video file was recorded for this sample."
    elif video is None:
        video_note = "The video is not under a configured media root (start `kuaimod review` with --media-root DIR)."
    else:
        video_note = ""
    precedents, recorded = shown_precedents(ctx.store, raw)
    header = f"### {render.esc(sample_id)}" + (f" — {render.esc(sample.title[:80])}" if sample.title else "")
    return ItemView(
        sample_id=sample_id,
        verdict_id=verdict_id,
        header=header,
        video=str(video) if video is not None else None,
        video_note=video_note,
        frames=render.frames_html(sample, verdict, roots, blurred=blurred),
        text=render.text_html(sample, verdict),
        verdict=render.verdict_html(verdict, policy),
        rationale=verdict.rationale or verdict.raw_output or "(no reasoning recorded)",
        precedents=render.precedents_html(precedents, recorded),
        provenance=render.provenance_html(verdict),
        blurred=blurred,
        category=verdict.category,
        audit=audit_table(ctx.store, sample_id=sample_id, limit=50),
    )


def reveal_frames(ctx: ReviewContext, sample_id: str, reviewer: str) -> ItemView:
    """Show the frames unblurred; logged, since it exposes the reviewer to graphic content."""
    log_action(ctx.store, reviewer, "reveal", sample_id)
    return item_view(ctx, sample_id, reveal=True)


# --------------------------------------------------------------------------- decisions


def _check_current(store: Store, sample_id: str, verdict_id: int | None) -> tuple[int, Verdict]:
    latest_id, verdict, _ = latest_verdict(store, sample_id)
    if verdict_id is not None and latest_id != verdict_id:
        raise ReviewError(f"sample {sample_id} has a newer verdict than the one on screen; reload the item")
    return latest_id, verdict


def record_decision(
    ctx: ReviewContext,
    sample_id: str,
    reviewer: str,
    *,
    category: str,
    decision: str | None,
    reason: str,
    action: str,
    verdict_id: int | None = None,
    make_precedent: bool = False,
) -> str:
    """Write a reviewer decision (and optionally a precedent); returns a status line for the reviewer."""
    policy, _ = ctx.policy()
    latest_id, verdict = _check_current(ctx.store, sample_id, verdict_id)
    event = FeedbackEvent(
        sample_id=sample_id,
        kind=FeedbackKind.REVIEWER_DECISION,
        category=category,
        decision=Decision(decision) if decision and decision != DEFAULT_DECISION else None,
        reason=reason,
        author=reviewer,
        source=SOURCE,
    ).resolved(policy)  # resolve first: the event id is needed to link a precedent to this row
    add_feedback(ctx.store, event, policy)
    feedback_id = _feedback_id(ctx.store, event.event_id or "")
    precedent_id = None
    if make_precedent:
        precedent_id = add_precedent(
            ctx.store,
            load_sample(ctx.store, sample_id),
            event.category or category,
            str(event.decision),
            reason=reason,
            author=reviewer,
            feedback_id=feedback_id,
            embedder=ctx.embedder(),
        )
    log_action(
        ctx.store,
        reviewer,
        action,
        sample_id,
        verdict_id=latest_id,
        model_category=verdict.category,
        category=event.category,
        decision=str(event.decision),
        reason=reason,
        feedback_id=feedback_id,
        precedent_id=precedent_id,
    )
    done = f"{action} on {sample_id}: {event.category} / {event.decision}, by {reviewer}"
    return done + (f"; saved as precedent #{precedent_id}" if precedent_id else "")


def _feedback_id(store: Store, event_id: str) -> int | None:
    t = store.table("feedback")
    with store.engine.connect() as conn:
        value = conn.execute(store.sa.select(t.c.id).where(t.c.event_id == event_id)).scalar()
    return int(value) if value is not None else None


def agree(
    ctx: ReviewContext,
    sample_id: str,
    reviewer: str,
    *,
    note: str = "",
    verdict_id: int | None = None,
    make_precedent: bool = False,
) -> str:
    """Confirm the model's category; the decision is the policy's action for it."""
    _, verdict = _check_current(ctx.store, sample_id, verdict_id)
    if verdict.category is None:
        raise ReviewError(f"the verdict on {sample_id} names no category ({verdict.status}); use Override")
    reason = "agree" + (f": {note.strip()}" if note.strip() else "")
    return record_decision(
        ctx,
        sample_id,
        reviewer,
        category=verdict.category,
        decision=None,
        reason=reason,
        action="agree",
        verdict_id=verdict_id,
        make_precedent=make_precedent,
    )


def override(
    ctx: ReviewContext,
    sample_id: str,
    reviewer: str,
    *,
    category: str,
    decision: str | None,
    reason_code: str,
    note: str = "",
    verdict_id: int | None = None,
    make_precedent: bool = False,
) -> str:
    """Record a different category and/or decision, with a reason code and an optional note."""
    if not category:
        raise ReviewError("pick the category for the override")
    if reason_code not in REASON_CODES:
        raise ReviewError(f"pick a reason code ({', '.join(REASON_CODES)})")
    reason = reason_code + (f": {note.strip()}" if note.strip() else "")
    return record_decision(
        ctx,
        sample_id,
        reviewer,
        category=category,
        decision=decision,
        reason=reason,
        action="override",
        verdict_id=verdict_id,
        make_precedent=make_precedent,
    )


def category_choices(policy: Policy) -> list[tuple[str, str]]:
    """(label, code) pairs for the category menu."""
    return [(f"{c.code} · {c.tag} · {c.name}", c.code) for c in policy.categories]
