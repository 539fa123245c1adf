"""Review handlers: plain functions over the store, called by the Gradio app and by tests.

Decisions go through :func:`kuaimod_open.loop.feedback.record_decision` (validated against the active
policy, one per item, reviewer and verdict unless amended), precedents through
:func:`kuaimod_open.loop.precedents.add_precedent`, and every action is written to the audit trail
with the reviewer's name.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kuaimod_open.core.embedding import Embedder
from kuaimod_open.errors import KuaimodError
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.policy import Policy, default_policy_path
from kuaimod_open.judge.verdict import Verdict
from kuaimod_open.loop.feedback import (
    LABEL_KINDS,
    REASON_CODES,
    FeedbackKind,
    prior_decision,
    record_decision,
    stored_samples,
)
from kuaimod_open.loop.precedents import add_precedent
from kuaimod_open.loop.queue import low_confidence as store_low_confidence
from kuaimod_open.loop.queue import set_low_confidence
from kuaimod_open.loop.registry import active_policy
from kuaimod_open.loop.store import Store

from . import render
from .access import Session, local_operator, session_for
from .audit import audit_table, log_action
from .config import ReviewConfig
from .media import frame_data_url, resolve_roots, safe_frame, safe_video, store_media_roots, video_url
from .queue import HIGH_SEVERITY, severity_of, shown_confidence
from .queue_source import holder

SOURCE = "review-ui"
DEFAULT_DECISION = ""  # the form's "policy default": the category's action
DECISION_CHOICES = [("policy action", DEFAULT_DECISION), ("allow", "allow"), ("restrict", "restrict"),
                    ("block", "block")]  # fmt: skip
_MATCH_TOLERANCE_S = 0.05  # a frame is 'matched' when a match pair names its time stamp (to this tolerance)


class ReviewError(KuaimodError):
    """An action that cannot be done as asked; the message tells the reviewer why."""


class ReviewContext:
    """The store, the settings and the things derived from them that handlers share."""

    def __init__(self, config: ReviewConfig, store: Store | None = None) -> None:
        self.config = config
        self.store = store if store is not None else Store(config.db)
        self.operator = local_operator(config.default_reviewer)
        if config.low_confidence is not None:
            # The threshold is the store's (every app instance and `kuaimod queue` agree on it).
            set_low_confidence(self.store, config.low_confidence)
        self._embedder: Embedder | None = None
        # Set by the server: lets its file route serve a media folder recorded after start-up.
        self.allow_media_root: Callable[[Path], None] | None = None

    def policy(self) -> tuple[Policy, Path]:
        """The active policy (the shipped one is registered and activated on first use)."""
        return active_policy(self.store, default=self.config.policy_default or default_policy_path())

    def roots(self) -> tuple[Path, ...]:
        """Folders media may be served from: configured roots, plus recorded frame and video folders when trusted."""
        roots = resolve_roots(self.config.media_roots)
        if self.config.store_frame_roots:
            roots += tuple(r for r in store_media_roots(self.store) if r not in roots)
        return roots

    def session(self, username: str | None) -> Session:
        """Who is acting in a request (see :func:`app.access.session_for`); every event calls this."""
        return session_for(username, self.config.users, self.operator)

    def embedder(self) -> Embedder | None:
        """The precedent embedder, when configured (loaded once)."""
        if self.config.use_embedder and self._embedder is None:
            from kuaimod_open.core.embedding import E5Embedder

            self._embedder = E5Embedder()
        return self._embedder


# --------------------------------------------------------------------------- reading


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


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def user_reports(store: Store, sample_id: str) -> render.Reports:
    """The sample's user reports: total, those after the last human decision, reasons with counts."""
    t = store.table("feedback")
    kinds = [*LABEL_KINDS, FeedbackKind.USER_REPORT.value]
    query = store.sa.select(t.c.kind, t.c.reason, t.c.created_at).where(t.c.sample_id == sample_id, t.c.kind.in_(kinds))
    with store.engine.connect() as conn:
        rows = [(kind, reason or "", _utc(created)) for kind, reason, created in conn.execute(query)]
    decided = max((when for kind, _, when in rows if kind in LABEL_KINDS and when is not None), default=None)
    reports = [(reason, when) for kind, reason, when in rows if kind == FeedbackKind.USER_REPORT.value]
    open_count = sum(1 for _, when in reports if decided is None or (when is not None and when > decided))
    counts = Counter(reason.strip() for reason, _ in reports)
    return render.Reports(
        total=len(reports),
        open=open_count,
        reasons=tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        last=max((when for _, when in reports if when is not None), default=None),
    )


# --------------------------------------------------------------------------- the item view


def form_token(sample_id: str, verdict_id: int) -> str:
    """What the decision form was filled for: a verdict of a sample (sent back with every decision)."""
    return f"{verdict_id}:{sample_id}"


def parse_token(token: str) -> tuple[str, int]:
    """(sample id, verdict id) of a form token."""
    head, sep, sample_id = (token or "").partition(":")
    if not sep or not head.isdigit() or not sample_id:
        raise ReviewError("select an item in the queue first")
    return sample_id, int(head)


@dataclass
class ItemView:
    """Everything the item panel shows."""

    sample_id: str
    verdict_id: int
    title: str
    media: str
    text: str
    why: str
    verdict: str
    evidence: str
    reports: str
    rationale: str
    precedents: str
    provenance: str
    blurred: bool
    category: str | None
    notice: str = ""  # e.g. "you already decided this verdict"
    audit: list[list[str]] = field(default_factory=list)

    @property
    def token(self) -> str:
        """The decision form's token for this view."""
        return form_token(self.sample_id, self.verdict_id)


def _frames(sample: Sample, verdict: Verdict, roots: tuple[Path, ...]) -> list[render.FrameCell]:
    cited = {ref.position for ref in verdict.evidence.frames}
    matched_at = [p.query_timestamp for m in verdict.evidence.matches for p in m.pairs if p.query_timestamp is not None]
    cells = []
    for position, frame in enumerate(sample.frames, start=1):
        path = safe_frame(frame.path, roots)
        matched = frame.timestamp is not None and any(
            abs(frame.timestamp - t) <= _MATCH_TOLERANCE_S for t in matched_at
        )
        cells.append(
            render.FrameCell(
                position=position,
                label=frame.label(position),
                url=frame_data_url(path) if path is not None else None,
                cited=position in cited,
                matched=matched,
            )
        )
    return cells


def item_view(
    ctx: ReviewContext, sample_id: str, *, viewer: Session | None = None, reveal: bool = False, queued: bool = True
) -> ItemView:
    """The item: media (blurred for high severity unless revealed), text, why it is here, verdict, evidence."""
    policy, _ = ctx.policy()
    verdict_id, verdict, raw = latest_verdict(ctx.store, sample_id)
    sample = load_sample(ctx.store, sample_id)
    roots = ctx.roots()
    severity = severity_of(verdict, policy)
    video = safe_video(sample.video, roots)
    if video is not None and ctx.allow_media_root is not None:
        ctx.allow_media_root(video.parent)
    frames = _frames(sample, verdict, roots)
    has_media = video is not None or any(f.url is not None for f in frames)
    blurred = has_media and not reveal and severity in HIGH_SEVERITY
    if sample.video is None:
        video_note = "No video file was recorded for this sample."
    elif video is None:
        video_note = "The video is not under a configured media root (start `kuaimod review` with --media-root DIR)."
    else:
        video_note = ""
    reports = user_reports(ctx.store, sample_id)
    confidence = shown_confidence(verdict)
    precedents, recorded = shown_precedents(ctx.store, raw)
    notice = ""
    if viewer is not None:
        before = prior_decision(ctx.store, sample_id, verdict_id, viewer.name)
        if before is not None:
            notice = (
                f"You recorded {before.category} / {before.decision} on this verdict {render.ago(before.created_at)}; "
                "tick 'amend' to record a new one."
            )
    reasons = render.why_reasons(verdict, reports, store_low_confidence(ctx.store), confidence)
    blur_reason = f"{verdict.category} has severity {severity}" if severity is not None else ""
    return ItemView(
        sample_id=sample_id,
        verdict_id=verdict_id,
        title=render.field_text(sample, "title"),
        media=render.media_html(
            video_url(video) if video is not None else None,
            video_note,
            frames,
            blurred=blurred,
            blur_reason=blur_reason,
        ),  # fmt: skip
        text=render.text_html(sample, verdict),
        why=render.why_html(reasons, queued=queued),
        verdict=render.verdict_html(verdict, policy, confidence),
        evidence=render.evidence_html(verdict, policy),
        reports=render.reports_html(reports),
        rationale=render.reasoning_text(verdict),
        precedents=render.precedents_html(precedents, recorded),
        provenance=render.provenance_html(verdict),
        blurred=blurred,
        category=verdict.category,
        notice=notice,
        audit=audit_table(ctx.store, sample_id=sample_id, limit=50),
    )


def reveal_media(ctx: ReviewContext, session: Session, token: str) -> ItemView:
    """Show the item's media unblurred (video, frames); logged, as it exposes the reviewer to graphic content."""
    sample_id, verdict_id = parse_token(token)
    log_action(ctx.store, session.name, "reveal", sample_id, verdict_id=verdict_id)
    return item_view(ctx, sample_id, viewer=session, reveal=True)


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class DecisionForm:
    """What the reviewer submitted, with the token of the item the form was filled for."""

    token: str
    category: str | None = None
    decision: str | None = None
    reason_code: str | None = None
    note: str = ""
    make_precedent: bool = False
    amend: bool = False


def _check_current(store: Store, sample_id: str, verdict_id: int) -> Verdict:
    latest_id, verdict, _ = latest_verdict(store, sample_id)
    if latest_id != verdict_id:
        raise ReviewError(f"sample {sample_id} has a newer verdict than the one on screen; reopen the item")
    return verdict


def decide(ctx: ReviewContext, session: Session, action: str, form: DecisionForm, *, showing: str) -> str:
    """Record an 'agree' or 'override' from the form; returns a status line.

    ``showing`` is the token of the item on screen now. A form filled for another item (the reviewer
    moved on before the click was processed) is refused rather than applied to the wrong video.
    """
    if not form.token or form.token != showing:
        raise ReviewError("the form was filled for another item: check the decision for this item and submit again")
    sample_id, verdict_id = parse_token(form.token)
    verdict = _check_current(ctx.store, sample_id, verdict_id)
    who, until = holder(ctx.store, sample_id)
    if who is not None and who != session.name:
        raise ReviewError(f"{sample_id} is claimed by {who} until {until:%H:%M} UTC: the decision is theirs until then")
    if action == "agree":
        if verdict.category is None:
            raise ReviewError(f"the verdict on {sample_id} names no category ({verdict.status}); use Override")
        category, decision, reason_code = verdict.category, None, "agree"
    elif action == "override":
        if not form.category:
            raise ReviewError("pick the category for the override")
        if form.reason_code not in REASON_CODES:
            raise ReviewError(f"pick a reason code ({', '.join(REASON_CODES)})")
        category, decision, reason_code = form.category, form.decision or None, form.reason_code
    else:
        raise ReviewError(f"unknown action {action!r}")
    policy, _ = ctx.policy()
    event = record_decision(
        ctx.store, policy, sample_id=sample_id, verdict_id=verdict_id, author=session.name, category=category,
        decision=decision, reason_code=reason_code, note=form.note, source=SOURCE, amend=form.amend,
    )  # fmt: skip
    feedback_id = _feedback_id(ctx.store, event.event_id or "")
    precedent_id = None
    if form.make_precedent:
        precedent_id = add_precedent(
            ctx.store, load_sample(ctx.store, sample_id), event.category or category, str(event.decision),
            reason=event.reason, author=session.name, feedback_id=feedback_id, embedder=ctx.embedder(),
        )  # fmt: skip
    verb = "amend" if event.event_id and event.event_id.startswith("amend-") else action
    log_action(
        ctx.store, session.name, verb, sample_id, verdict_id=verdict_id, model_category=verdict.category,
        category=event.category, decision=str(event.decision), reason=event.reason, feedback_id=feedback_id,
        precedent_id=precedent_id,
    )  # fmt: skip
    done = f"{verb} on {sample_id}: {event.category} / {event.decision}, by {session.name}"
    return done + (f"; saved as precedent #{precedent_id}" if precedent_id else "")


def _feedback_id(store: Store, event_id: str) -> int | None:
    t = store.table("feedback")
    with store.engine.connect() as conn:
        value = conn.execute(store.sa.select(t.c.id).where(t.c.event_id == event_id)).scalar()
    return int(value) if value is not None else None


def agree(
    ctx: ReviewContext, sample_id: str, reviewer: str, *, note: str = "", verdict_id: int | None = None,
    make_precedent: bool = False, amend: bool = False,
) -> str:  # fmt: skip
    """Confirm the model's category on the sample's latest verdict (or ``verdict_id``); the policy acts."""
    vid = verdict_id if verdict_id is not None else latest_verdict(ctx.store, sample_id)[0]
    token = form_token(sample_id, vid)
    form = DecisionForm(token=token, note=note, make_precedent=make_precedent, amend=amend)
    return decide(ctx, ctx.session(reviewer) if ctx.config.users else _named(reviewer), "agree", form, showing=token)


def override(
    ctx: ReviewContext, sample_id: str, reviewer: str, *, category: str, decision: str | None, reason_code: str,
    note: str = "", verdict_id: int | None = None, make_precedent: bool = False, amend: bool = False,
) -> str:  # fmt: skip
    """Record a different category and/or decision, with a reason code and an optional note."""
    vid = verdict_id if verdict_id is not None else latest_verdict(ctx.store, sample_id)[0]
    token = form_token(sample_id, vid)
    form = DecisionForm(token=token, category=category, decision=decision, reason_code=reason_code, note=note,
                        make_precedent=make_precedent, amend=amend)  # fmt: skip
    session = ctx.session(reviewer) if ctx.config.users else _named(reviewer)
    return decide(ctx, session, "override", form, showing=token)


def _named(name: str) -> Session:
    from .access import Role

    if not name.strip():
        raise ReviewError("a decision needs the reviewer's name")
    return Session(name=name.strip()[:200], role=Role.REVIEWER)


def category_choices(policy: Policy) -> list[tuple[str, str]]:
    """(label, code) pairs for the category menu."""
    return [(f"{c.code} · {c.tag} · {c.name}", c.code) for c in policy.categories]


def reason_choices() -> list[tuple[str, str]]:
    """(label, code) pairs for the reason menu: the code and what it means."""
    return [(f"{code} — {text}", code) for code, text in REASON_CODES.items()]
