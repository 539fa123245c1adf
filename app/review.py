"""The Gradio app: review queue, item view and decisions; the other tabs live in :mod:`app.tabs`.

Callbacks are thin: they read the reviewer's name (the logged-in user when credentials are
configured), call a plain handler from :mod:`kuaimod_open.app.handlers`, and turn expected errors into a status
line instead of a stack trace.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr
import pandas as pd

from kuaimod_open.errors import KuaimodError

from . import handlers as h
from .audit import AUDIT_HEADERS
from .config import ReviewConfig
from .queue import NO_CATEGORY, QUEUE_HEADERS, SortKey, queue_filters
from .tabs import audit_tab, evaluation_tab, policy_tab

# Keyboard shortcuts for the common actions; ignored while typing in a field.
SHORTCUTS = {"a": "km-agree", "o": "km-override", "j": "km-next", "k": "km-prev", "v": "km-reveal", "r": "km-refresh"}
HEAD = (
    "<script>document.addEventListener('keydown', function (e) {"
    " var t = e.target; if (e.ctrlKey || e.metaKey || e.altKey) return;"
    " if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;"
    f" var ids = {SHORTCUTS!r}; var id = ids[e.key.toLowerCase()]; if (!id) return;"
    " var el = document.getElementById(id); if (!el) return;"
    " var b = el.tagName === 'BUTTON' ? el : el.querySelector('button'); if (b) { e.preventDefault(); b.click(); }"
    "});</script>"
).replace('"', "'")
CSS = "#km-status p { font-weight: 600; } .km-frame img { transition: filter .2s; }"
DECISIONS = [h.DEFAULT_DECISION, "allow", "restrict", "review", "block"]


def theme() -> Any:
    """The default theme with system fonts: the UI must not fetch web fonts (reviewers may be offline)."""
    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "Consolas", "monospace"]
    )


def launch_options() -> dict[str, Any]:
    """Blocks.launch() arguments that carry the look and the shortcuts (Gradio 6 takes them there)."""
    return {"css": CSS, "head": HEAD, "theme": theme()}


def _frame(rows: list[list[Any]], headers: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=headers)


def _user(request: gr.Request | None) -> str | None:
    return getattr(request, "username", None) if request is not None else None


def build_app(config: ReviewConfig | h.ReviewContext) -> gr.Blocks:
    """The review app for a store (build it, then ``launch(**launch_options())``)."""
    ctx = config if isinstance(config, h.ReviewContext) else h.ReviewContext(config)
    demo = gr.Blocks(title="kuaimod review", analytics_enabled=False)
    with demo:
        with gr.Row():
            gr.Markdown("## kuaimod review — queue, policy, evaluation")
            reviewer = gr.Textbox(
                label="Reviewer", value=ctx.config.default_reviewer, elem_id="km-reviewer", scale=0, min_width=220
            )
        with gr.Tabs():
            with gr.Tab("Review queue", id="queue", elem_id="km-tab-queue"):
                _review_tab(ctx, reviewer, demo)
            with gr.Tab("Policy editor", id="policy", elem_id="km-tab-policy"):
                policy_tab(ctx, reviewer, demo)
            with gr.Tab("Evaluation", id="evaluation", elem_id="km-tab-evaluation"):
                evaluation_tab(ctx, demo)
            with gr.Tab("Audit log", id="audit", elem_id="km-tab-audit"):
                audit_tab(ctx, demo)

        def who(request: gr.Request) -> Any:
            name = _user(request)
            return gr.update(value=name, interactive=False) if name else gr.update()

        demo.load(who, outputs=[reviewer])
    return demo


def _review_tab(ctx: h.ReviewContext, reviewer: gr.Textbox, demo: gr.Blocks) -> None:
    policy, _ = ctx.policy()
    cats, versions = queue_filters(ctx.store)
    ids = gr.State([])
    current = gr.State("")
    verdict_id = gr.State(0)
    with gr.Row():
        sort = gr.Dropdown([k.value for k in SortKey], value="uncertainty", label="Sort by", elem_id="km-sort")
        category = gr.Dropdown(["all", NO_CATEGORY, *cats], value="all", label="Category", elem_id="km-filter-cat")
        version = gr.Dropdown(["all", *versions], value="all", label="Policy version", elem_id="km-filter-version")
        refresh = gr.Button("Refresh (R)", elem_id="km-refresh", scale=0)
    queue = gr.Dataframe(
        value=_frame([], QUEUE_HEADERS), headers=QUEUE_HEADERS, interactive=False, elem_id="km-queue", max_height=300
    )
    status = gr.Markdown("Select an item in the queue.", elem_id="km-status")
    with gr.Row():
        prev_btn = gr.Button("Previous (K)", elem_id="km-prev", size="sm")
        next_btn = gr.Button("Next (J)", elem_id="km-next", size="sm")
        gr.Markdown("Keys: **A** agree · **O** override · **J/K** next/previous · **V** reveal frames · **R** refresh")
    header = gr.Markdown(elem_id="km-item-header")
    with gr.Row():
        with gr.Column(scale=3):
            video = gr.Video(label="Video", interactive=False, elem_id="km-video", height=260)
            video_note = gr.Markdown(elem_id="km-video-note")
            frames = gr.HTML(elem_id="km-frames")
            reveal = gr.Button("Reveal frames (V)", elem_id="km-reveal", size="sm")
            text = gr.HTML(elem_id="km-text")
        with gr.Column(scale=2):
            verdict = gr.HTML(elem_id="km-verdict")
            rationale = gr.Textbox(label="Model reasoning", lines=6, max_lines=14, interactive=False)
            note = gr.Textbox(label="Note (optional)", elem_id="km-note")
            make_precedent = gr.Checkbox(label="Make this a precedent", elem_id="km-precedent")
            agree_btn = gr.Button("Agree (A)", variant="primary", elem_id="km-agree")
            with gr.Group():
                ov_category = gr.Dropdown(
                    h.category_choices(policy), label="Override: category", elem_id="km-ov-category"
                )
                with gr.Row():
                    ov_decision = gr.Dropdown(
                        DECISIONS, value=h.DEFAULT_DECISION, label="Decision", elem_id="km-ov-decision"
                    )
                    ov_reason = gr.Dropdown(
                        list(h.REASON_CODES), value=None, label="Reason code", elem_id="km-ov-reason"
                    )
                override_btn = gr.Button("Override (O)", variant="stop", elem_id="km-override")
            with gr.Accordion("Precedents shown to the model", open=False):
                precedents = gr.HTML(elem_id="km-precedents")
            with gr.Accordion("Provenance", open=False):
                provenance = gr.HTML(elem_id="km-provenance")
    item_audit = gr.Dataframe(
        value=_frame([], AUDIT_HEADERS), headers=AUDIT_HEADERS, interactive=False, label="Audit trail of this item",
        elem_id="km-item-audit",
    )  # fmt: skip

    item_outputs: list[Any] = [current, verdict_id, header, video, video_note, frames, text, verdict, rationale,
                               precedents, provenance, item_audit, ov_category]  # fmt: skip
    form: list[Any] = [note, make_precedent, ov_reason]  # cleared after a decision is recorded
    blank = ["", 0, "### Queue empty — nothing awaits review.", None, "", "", "", "", "", "", "",
             _frame([], AUDIT_HEADERS), None]  # fmt: skip

    def show(view: h.ItemView) -> list[Any]:
        return [view.sample_id, view.verdict_id, view.header, view.video, view.video_note, view.frames, view.text,
                view.verdict, view.rationale, view.precedents, view.provenance, _frame(view.audit, AUDIT_HEADERS),
                view.category]  # fmt: skip

    def load_queue(s: str, c: str, v: str) -> tuple[pd.DataFrame, list[str]]:
        items = h.queue_items(ctx, s, c, v)
        return _frame([i.row() for i in items], QUEUE_HEADERS), [i.sample_id for i in items]

    def open_item(sample_id: str) -> list[Any]:
        return show(h.item_view(ctx, sample_id)) if sample_id else blank

    def refresh_all(s: str, c: str, v: str, sample_id: str) -> list[Any]:
        table, order = load_queue(s, c, v)
        chosen = sample_id if sample_id in order else (order[0] if order else "")
        return [table, order, f"{len(order)} item(s) awaiting review.", *open_item(chosen)]

    def select(order: list[str], event: gr.SelectData) -> list[Any]:
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        return open_item(order[row]) if 0 <= row < len(order) else blank

    def step(delta: int) -> Callable[[list[str], str], list[Any]]:
        def move(order: list[str], sample_id: str) -> list[Any]:
            if not order:
                return blank
            at = order.index(sample_id) + delta if sample_id in order else 0
            return open_item(order[max(0, min(len(order) - 1, at))])

        return move

    def decide(
        s: str, c: str, v: str, order: list[str], sample_id: str, typed: str, request: gr.Request | None,
        action: Callable[[str], str],
    ) -> list[Any]:  # fmt: skip
        # Run a decision, then refresh the queue and open the next item; errors become the status line.
        keep = [gr.update()] * (len(item_outputs) + len(form))
        if not sample_id:
            return [gr.update(), order, "Select an item first.", *keep]
        try:
            message = action(h.resolve_reviewer(_user(request), typed, ctx.config.default_reviewer))
        except KuaimodError as exc:
            return [gr.update(), order, f"⚠ {exc}", *keep]  # the form keeps what the reviewer typed
        at = order.index(sample_id) if sample_id in order else 0
        table, new_order = load_queue(s, c, v)
        nxt = new_order[min(at, len(new_order) - 1)] if new_order else ""
        return [table, new_order, f"✔ {message}", *open_item(nxt), "", False, None]

    def do_agree(
        s: str, c: str, v: str, order: list[str], sample_id: str, vid: int, typed: str, note_text: str,
        precedent: bool, request: gr.Request,
    ) -> list[Any]:  # fmt: skip
        return decide(s, c, v, order, sample_id, typed, request, lambda name: h.agree(
            ctx, sample_id, name, note=note_text, verdict_id=vid, make_precedent=precedent))  # fmt: skip

    def do_override(
        s: str, c: str, v: str, order: list[str], sample_id: str, vid: int, typed: str, note_text: str,
        precedent: bool, cat: str, dec: str, reason: str, request: gr.Request,
    ) -> list[Any]:  # fmt: skip
        return decide(s, c, v, order, sample_id, typed, request, lambda name: h.override(
            ctx, sample_id, name, category=cat, decision=dec, reason_code=reason, note=note_text, verdict_id=vid,
            make_precedent=precedent))  # fmt: skip

    def do_reveal(sample_id: str, typed: str, request: gr.Request) -> list[Any]:
        if not sample_id:
            return ["Select an item first.", gr.update()]
        try:
            name = h.resolve_reviewer(_user(request), typed, ctx.config.default_reviewer)
        except KuaimodError as exc:
            return [f"⚠ {exc}", gr.update()]
        return [f"Frames of {sample_id} revealed by {name}.", h.reveal_frames(ctx, sample_id, name).frames]

    filters = [sort, category, version]
    head_outputs: list[Any] = [queue, ids, status]
    decision_inputs = [*filters, ids, current, verdict_id, reviewer, note, make_precedent]
    for trigger in (refresh.click, sort.change, category.change, version.change):
        trigger(refresh_all, inputs=[*filters, current], outputs=head_outputs + item_outputs)
    demo.load(refresh_all, inputs=[*filters, current], outputs=head_outputs + item_outputs)
    queue.select(select, inputs=[ids], outputs=item_outputs)
    next_btn.click(step(1), inputs=[ids, current], outputs=item_outputs)
    prev_btn.click(step(-1), inputs=[ids, current], outputs=item_outputs)
    agree_btn.click(do_agree, inputs=decision_inputs, outputs=head_outputs + item_outputs + form)
    override_btn.click(
        do_override, inputs=[*decision_inputs, ov_category, ov_decision, ov_reason],
        outputs=head_outputs + item_outputs + form,
    )  # fmt: skip
    reveal.click(do_reveal, inputs=[current, reviewer], outputs=[status, frames])
