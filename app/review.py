"""The Gradio app: the review queue and item view with its decision panel; the other tabs live in
:mod:`app.tabs` and :mod:`app.policy_tab`.

Layout (made for 1440x900 and up): the queue (a page of 50 with fixed columns) and the item's media,
text and evidence on the left; on the right a sticky panel with why the item is here, the verdict,
the decision form and its status, so the actions are always in view. Callbacks are thin: each one
first resolves the session (the signed-in account, or the local operator), then calls a plain handler
and turns expected errors into the status line. No callback is a public API endpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import gradio as gr
import pandas as pd

from kuaimod_open.errors import KuaimodError

from . import handlers as h
from . import render
from .access import AccessError, Session
from .audit import AUDIT_HEADERS
from .config import ReviewConfig
from .queue_source import (
    NO_CATEGORY,
    QueueFilters,
    QueuePage,
    SortKey,
    claim,
    filter_choices,
    holder,
    queue_page,
    queue_row,
    release,
)

PRIVATE = "private"  # every event: hidden from /config's API listing and not callable by API clients
# The review tab's events run one at a time, in the order they arrive (Gradio's limit is per listener
# otherwise): a decision clicked right after "next" is checked against the item "next" opened.
LANE: dict[str, Any] = {"api_visibility": PRIVATE, "concurrency_id": "km-review", "concurrency_limit": 1}
# Keyboard shortcuts for the common actions; ignored while typing in a field.
SHORTCUTS = {"a": "km-agree", "o": "km-override", "j": "km-next", "k": "km-prev", "v": "km-reveal", "r": "km-refresh"}
HEAD = (
    "<script>document.addEventListener('keydown', function (e) {"
    " var t = e.target; if (e.ctrlKey || e.metaKey || e.altKey) return;"
    " if (e.key === 'Escape') { document.querySelectorAll('.km-zoom').forEach(function (z) { z.remove(); }); return; }"
    " if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;"
    " if (e.key === '/') { var s = document.querySelector('#km-search input, #km-search textarea');"
    "   if (s) { e.preventDefault(); s.focus(); } return; }"
    f" var ids = {SHORTCUTS!r}; var id = ids[e.key.toLowerCase()]; if (!id) return;"
    " var el = document.getElementById(id); if (!el) return;"
    " var b = el.tagName === 'BUTTON' ? el : el.querySelector('button'); if (b) { e.preventDefault(); b.click(); }"
    "});</script>"
).replace('"', "'")
# The queue table: a click on a row opens it; the highlighted row is kept in view (J/K move it).
QUEUE_JS = (
    "element.addEventListener('click', function (e) {"
    " var row = e.target.closest('tr[data-id]'); if (row) trigger('click', {id: row.dataset.id}); });"
    " watch('value', function () { var cur = element.querySelector('tr.km-current');"
    " if (cur) cur.scrollIntoView({block: 'nearest'}); });"
)
# Frames: a click shows the frame large (blurred still, when the media is blurred); a click or Escape closes.
ZOOM_JS = (
    "element.addEventListener('click', function (e) {"
    " var open = element.querySelector('.km-zoom'); if (open) { open.remove(); return; }"
    " var img = e.target.closest('img.km-zoomable'); if (!img) return;"
    " var o = document.createElement('div'); o.className = 'km-zoom';"
    " o.style.cssText = 'position:fixed;inset:0;background:rgba(0,0,0,.82);display:flex;align-items:center;"
    "justify-content:center;z-index:1000;cursor:zoom-out';"
    " var big = document.createElement('img'); big.src = img.src; big.alt = img.alt;"
    " big.style.cssText = 'max-width:92vw;max-height:92vh;width:auto;height:auto;' + (img.style.filter ?"
    " 'filter:' + img.style.filter + ';' : ''); o.appendChild(big); element.appendChild(o); });"
)
CSS = """
/* overflow:hidden on the app container would make it the sticky panel's scroll box (it never scrolls). */
.gradio-container { padding-top: 4px !important; overflow: visible !important; }
#km-topbar { align-items: center; gap: 8px; }
#km-topbar h2 { margin: 0; font-size: 18px; }
#km-left { gap: 6px; }
#km-panel { position: sticky; top: 6px; align-self: flex-start; max-height: calc(100vh - 12px);
            overflow-y: auto; gap: 6px; }
#km-toolbar { gap: 6px; align-items: center; flex-wrap: nowrap; }
#km-pageinfo { font-size: 13px; white-space: nowrap; }
.km-qwrap { max-height: 362px; overflow-y: auto; border: 1px solid #d0d7de; border-radius: 6px; }
.km-q { table-layout: fixed; width: 100%; border-collapse: collapse; font-size: 13px; line-height: 18px; }
.km-q th, .km-q td { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; padding: 3px 6px;
                     border-bottom: 1px solid #eaeef2; text-align: left; }
.km-q thead th { position: sticky; top: 0; background: #f6f8fa; z-index: 1; font-weight: 600; }
.km-q tr.km-row { cursor: pointer; }
.km-q tr.km-row:hover { background: #f6f8fa; }
.km-q tr.km-current, .km-q tr.km-current:hover { background: #ddf4ff; box-shadow: inset 4px 0 0 #0969da; }
.km-q tr.km-claimed td { color: #8c959f; font-style: italic; }
.km-head { display: flex; flex-wrap: wrap; align-items: baseline; gap: 4px 10px; }
.km-head-id { font-weight: 700; font-size: 17px; }
.km-head-pos { color: #57606a; font-size: 13px; }
.km-head-title { flex-basis: 100%; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.km-claim { flex-basis: 100%; color: #9a6700; font-size: 13px; }
#km-status { min-height: 24px; font-weight: 600; }
#km-status .km-ok { color: #1a7f37; } #km-status .km-err { color: #cf222e; } #km-status .km-note { color: #9a6700; }
#km-form { gap: 0; }
#km-ov-decision .wrap { gap: 4px; }
#km-ov-decision label { padding: 2px 8px !important; }
#km-panel .block { padding-top: 4px; padding-bottom: 4px; }
#km-why-box ul li { margin: 0; }
#km-actions, #km-override-row { gap: 6px; align-items: center; flex-wrap: nowrap; }
#km-override-row .block { padding: 0 !important; }
#km-override-row label span { white-space: nowrap; }
#km-panel .html-container { padding: 2px 2px !important; }
/* Gradio sizes inputs to the font, which clips descenders: underscores in 'PORN_VULGAR' vanished. */
input { min-height: 1.5em; line-height: 1.5em !important; }
.km-md-tables table { table-layout: auto; }
.km-md-tables td, .km-md-tables th { white-space: nowrap; font-variant-numeric: tabular-nums; }
"""


def theme() -> Any:
    """The default theme with system fonts: the UI must not fetch web fonts (reviewers may be offline)."""
    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "Noto Sans CJK SC", "sans-serif"],
        font_mono=["ui-monospace", "Consolas", "monospace"],
    )


def launch_options() -> dict[str, Any]:
    """Blocks.launch() arguments that carry the look and the shortcuts (Gradio 6 takes them there)."""
    return {"css": CSS, "head": HEAD, "theme": theme()}


def _frame(rows: list[list[Any]], headers: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=headers)


def _user(request: gr.Request | None) -> str | None:
    return getattr(request, "username", None) if request is not None else None


def guard(ctx: h.ReviewContext, request: gr.Request | None) -> Session:
    """The session of a request; every callback calls this first (an unknown session is an error)."""
    try:
        return ctx.session(_user(request))
    except AccessError as exc:
        raise gr.Error(str(exc)) from None


def status_html(message: str, kind: str = "ok") -> str:
    """The status line beside the buttons (ok, err or note)."""
    if not message:
        return ""
    mark = {"ok": "✔ ", "err": "⚠ ", "note": ""}.get(kind, "")
    return f'<span class="km-{kind}">{mark}{render.esc(message)}</span>'


def build_app(config: ReviewConfig | h.ReviewContext) -> gr.Blocks:
    """The review app for a store (build it, then ``launch(**launch_options())``)."""
    from .policy_tab import policy_tab
    from .tabs import audit_tab, evaluation_tab

    ctx = config if isinstance(config, h.ReviewContext) else h.ReviewContext(config)
    demo = gr.Blocks(title="kuaimod review", analytics_enabled=False, fill_width=True)
    with demo:
        with gr.Row(elem_id="km-topbar"):
            gr.HTML("<h2>kuaimod review</h2>", scale=0, min_width=160)
            who = gr.HTML(elem_id="km-who", scale=1)
        with gr.Tabs():
            with gr.Tab("Review queue", id="queue", elem_id="km-tab-queue"):
                _review_tab(ctx, demo)
            with gr.Tab("Policy editor", id="policy", elem_id="km-tab-policy"):
                policy_tab(ctx, demo)
            with gr.Tab("Evaluation", id="evaluation", elem_id="km-tab-evaluation"):
                evaluation_tab(ctx, demo)
            with gr.Tab("Audit log", id="audit", elem_id="km-tab-audit"):
                audit_tab(ctx, demo)

        def whoami(request: gr.Request) -> str:
            s = guard(ctx, request)
            how = "signed in" if ctx.config.users else "local operator"
            return f'<div style="text-align:right">{how}: <strong>{render.esc(s.name)}</strong> ({s.role})</div>'

        demo.load(whoami, outputs=[who], api_visibility=PRIVATE)
    return demo


def _review_tab(ctx: h.ReviewContext, demo: gr.Blocks) -> None:
    policy, _ = ctx.policy()
    cats, versions = filter_choices(ctx.store)
    page_state = gr.State({})
    showing = gr.State("")  # the token of the item on screen (server side)
    with gr.Row(equal_height=False, elem_id="km-review"):
        with gr.Column(scale=2, min_width=640, elem_id="km-left"):
            with gr.Row(elem_id="km-toolbar"):
                search = gr.Textbox(placeholder="Search sample id  ( / )", show_label=False, container=False,
                                    elem_id="km-search", scale=3, min_width=160)  # fmt: skip
                sort = gr.Dropdown([(f"sort: {k.value}", k.value) for k in SortKey], value=SortKey.UNCERTAINTY.value,
                                   show_label=False, container=False, elem_id="km-sort", scale=2,
                                   min_width=150)  # fmt: skip
                category = gr.Dropdown([("category: all", "all"), NO_CATEGORY, *cats], value="all", show_label=False,
                                       container=False, elem_id="km-filter-cat", scale=2, min_width=150)  # fmt: skip
                version = gr.Dropdown([("policy: all", "all"), *versions], value="all", show_label=False,
                                      container=False, elem_id="km-filter-version", scale=2, min_width=120)  # fmt: skip
                refresh = gr.Button("Refresh (R)", elem_id="km-refresh", size="sm", scale=0, min_width=90)
            queue = gr.HTML(elem_id="km-queue", js_on_load=QUEUE_JS)
            with gr.Row(elem_id="km-pager"):
                prev_page = gr.Button("◀ previous 50", size="sm", elem_id="km-prev-page", scale=0, min_width=120)
                page_info = gr.HTML(elem_id="km-pageinfo")
                next_page = gr.Button("next 50 ▶", size="sm", elem_id="km-next-page", scale=0, min_width=120)
            media = gr.HTML(elem_id="km-media", js_on_load=ZOOM_JS)
            text = gr.HTML(elem_id="km-text")
            with gr.Accordion("Evidence", open=True, elem_id="km-evidence-box"):
                evidence = gr.HTML(elem_id="km-evidence")
            with gr.Accordion("Reasoning", open=True):
                rationale = gr.Textbox(show_label=False, lines=4, max_lines=14, interactive=False,
                                       elem_id="km-rationale")  # fmt: skip
            with gr.Accordion("Precedents shown to the model", open=False):
                precedents = gr.HTML(elem_id="km-precedents")
            with gr.Accordion("Provenance", open=False):
                provenance = gr.HTML(elem_id="km-provenance")
            item_audit = gr.Dataframe(
                value=_frame([], AUDIT_HEADERS), headers=AUDIT_HEADERS, interactive=False,
                label="Audit trail of this item", elem_id="km-item-audit",
            )  # fmt: skip
        with gr.Column(scale=1, min_width=420, elem_id="km-panel"):
            header = gr.HTML(elem_id="km-item-header")
            why = gr.HTML(elem_id="km-why-box")
            reports = gr.HTML(elem_id="km-user-reports")
            verdict = gr.HTML(elem_id="km-verdict")
            with gr.Row(elem_id="km-actions"):
                agree_btn = gr.Button("Agree (A)", variant="primary", elem_id="km-agree", min_width=100)
                reveal_btn = gr.Button("Reveal (V)", elem_id="km-reveal", size="sm", visible=False, scale=0,
                                       min_width=90)  # fmt: skip
                prev_btn = gr.Button("◀ Previous (K)", elem_id="km-prev", size="sm", scale=0, min_width=110)
                next_btn = gr.Button("Next (J) ▶", elem_id="km-next", size="sm", scale=0, min_width=100)
            with gr.Group(elem_id="km-form"):
                ov_category = gr.Dropdown(h.category_choices(policy), label="Category", elem_id="km-ov-category")
                ov_decision = gr.Radio(h.DECISION_CHOICES, value=h.DEFAULT_DECISION, label="Decision",
                                       elem_id="km-ov-decision")  # fmt: skip
                with gr.Row():
                    ov_reason = gr.Dropdown(h.reason_choices(), value=None, label="Reason code",
                                            elem_id="km-ov-reason", scale=1)  # fmt: skip
                    note = gr.Textbox(label="Note (optional)", elem_id="km-note", scale=1)
            with gr.Row(elem_id="km-override-row"):
                override_btn = gr.Button("Override (O)", variant="stop", elem_id="km-override", min_width=120)
                make_precedent = gr.Checkbox(label="precedent", elem_id="km-precedent", scale=0, min_width=120)
                amend = gr.Checkbox(label="amend", elem_id="km-amend", scale=0, min_width=110)
            status = gr.HTML(elem_id="km-status")
            gr.HTML(
                '<div style="font-size:12px;color:#57606a">Keys: <b>A</b> agree · <b>O</b> override · '
                "<b>J/K</b> next/previous · <b>V</b> reveal · <b>R</b> refresh · <b>/</b> search</div>"
            )
            form_token = gr.Textbox(visible=False, elem_id="km-form-token")

    # ---------------------------------------------------------------- what an opened item sets
    item_outputs: list[Any] = [showing, form_token, header, why, reports, verdict, media, text, evidence, rationale,
                               precedents, provenance, item_audit, reveal_btn]  # fmt: skip
    form_outputs: list[Any] = [ov_category, ov_decision, ov_reason, note, make_precedent, amend]
    queue_outputs: list[Any] = [page_state, queue, page_info]
    opened = item_outputs + form_outputs + [status]
    everything = queue_outputs + opened

    def form_reset(category: str | None) -> list[Any]:
        # A fresh form for every item: nothing chosen for one video ever carries over to the next.
        return [category, h.DEFAULT_DECISION, None, "", False, False]

    def item_values(
        view: h.ItemView | None, position: str, *, message: str = "", kind: str = "ok", claim: str = ""
    ) -> list[Any]:
        if view is None:
            empty = render.header_html("—", "", "queue empty")
            why_empty = render.why_html(["nothing awaits review"], queued=True)
            return ["", "", empty, why_empty, gr.update(value="", visible=False), "", "", "", "", "", "", "",
                    _frame([], AUDIT_HEADERS), gr.update(visible=False), *form_reset(None),
                    status_html(message, kind)]  # fmt: skip
        shown = message or view.notice
        return [view.token, view.token, render.header_html(view.sample_id, view.title, position, claim), view.why,
                gr.update(value=view.reports, visible=bool(view.reports)), view.verdict, view.media, view.text,
                view.evidence, view.rationale, view.precedents, view.provenance, _frame(view.audit, AUDIT_HEADERS),
                gr.update(visible=view.blurred), *form_reset(view.category),
                status_html(shown, kind if message else "note")]  # fmt: skip

    def page_values(page: QueuePage, current: str, filters: QueueFilters, me: str, claimed: str) -> list[Any]:
        state = {"cursor": page.cursor, "ids": page.ids, "offset": page.offset, "total": page.total,
                 "next": page.next_cursor, "prev": page.prev_cursor, "filters": filters.__dict__,
                 "claimed": claimed}  # fmt: skip
        first, last = (page.offset + 1, page.offset + len(page.rows)) if page.rows else (0, 0)
        what = f"matching “{render.esc(filters.search)}”" if filters.search else "awaiting review"
        info = f"{first}–{last} of <b>{page.total}</b> {what}"
        return [state, render.queue_html(page, current, me), info]

    def position(page: QueuePage, sample_id: str) -> str:
        if sample_id in page.ids:
            return f"{page.offset + page.ids.index(sample_id) + 1} of {page.total}"
        return "not in the queue"

    def fetch(filters: QueueFilters, cursor: str | None = None, offset: int = 0) -> QueuePage:
        page = queue_page(ctx.store, filters, cursor=cursor, offset=offset, limit=ctx.config.page_size)
        if page.prev_cursor is None and page.offset:
            page = replace(page, offset=0)  # walked back to the first page
        return page

    def claim_line(session: Session, sample_id: str, state: dict[str, Any]) -> tuple[str, str]:
        # Opening an item leases it to the reviewer (other reviewers and app instances skip it) and gives
        # back the one they had open; an item someone else holds is shown, but not theirs to decide.
        before = state.get("claimed") or ""
        if claim(ctx.store, sample_id, session.name, ctx.config.lease_s):
            if before and before != sample_id:
                release(ctx.store, before, session.name)
            until = holder(ctx.store, sample_id)[1]
            return sample_id, f"claimed by you until {until:%H:%M} UTC" if until else ""
        if before and before != sample_id:
            release(ctx.store, before, session.name)
        who, until = holder(ctx.store, sample_id)
        if who and who != session.name:
            return "", f"claimed by {who} until {until:%H:%M} UTC: look, but the decision is theirs until then"
        return "", ""

    def show(session: Session, state: dict[str, Any], page: QueuePage, filters: QueueFilters, sample_id: str, *,
             queued: bool = True, message: str = "", kind: str = "ok") -> list[Any]:  # fmt: skip
        if not sample_id:
            if state.get("claimed"):
                release(ctx.store, state["claimed"], session.name)
            return page_values(page, "", filters, session.name, "") + item_values(None, "", message=message,
                                                                                   kind=kind)  # fmt: skip
        claimed, line = claim_line(session, sample_id, state)
        head = page_values(page, sample_id, filters, session.name, claimed)
        view = h.item_view(ctx, sample_id, viewer=session, queued=queued)
        return head + item_values(view, position(page, sample_id), message=message, kind=kind, claim=line)

    def filters_of(state: dict[str, Any]) -> QueueFilters:
        return QueueFilters(**state["filters"]) if state.get("filters") else QueueFilters()

    def free(row: Any, session: Session) -> bool:
        return row.claimed_by in (None, session.name)

    def walk(session: Session, filters: QueueFilters, page: QueuePage, at: int, delta: int) -> tuple[QueuePage, int]:
        # From index ``at`` of ``page`` in direction ``delta``, the first item nobody else holds; past the
        # end of a page the neighbouring page is loaded (J/K walk the whole queue). -1: none that way.
        for _ in range(20):  # at most 20 pages of items held by others
            while 0 <= at < len(page.rows):
                if free(page.rows[at], session):
                    return page, at
                at += delta
            if at >= len(page.rows) and page.next_cursor is not None:
                page, at = fetch(filters, page.next_cursor, page.offset + len(page.rows)), 0
            elif at < 0 and page.prev_cursor is not None:
                page = fetch(filters, page.prev_cursor, page.offset - ctx.config.page_size)
                at = len(page.rows) - 1
            else:
                break
        return page, -1

    # ---------------------------------------------------------------- callbacks

    def load(q: str, s: str, c: str, v: str, token: str, state: dict[str, Any], request: gr.Request) -> list[Any]:
        session = guard(ctx, request)
        filters = QueueFilters.of(s, c, v, q)
        page = fetch(filters)
        current = token.partition(":")[2] if token else ""
        if filters.search and queue_row(ctx.store, filters.search) is not None:
            return show(session, state, page, filters, filters.search, queued=filters.search in page.ids)
        if current in page.ids and free(page.rows[page.ids.index(current)], session):
            return show(session, state, page, filters, current)
        page, at = walk(session, filters, page, 0, 1)
        return show(session, state, page, filters, page.ids[at] if at >= 0 else "")

    def open_row(state: dict[str, Any], request: gr.Request, evt: gr.EventData) -> list[Any]:
        session = guard(ctx, request)
        sample_id = str(getattr(evt, "_data", {}).get("id", "") or "")
        filters = filters_of(state)
        page = fetch(filters, state.get("cursor"), state.get("offset", 0))
        if sample_id not in page.ids:
            page, at = walk(session, filters, page, 0, 1)
            return show(session, state, page, filters, page.ids[at] if at >= 0 else "",
                        message=f"{sample_id} has left the queue", kind="note")  # fmt: skip
        return show(session, state, page, filters, sample_id)

    def step(delta: int) -> Callable[[dict[str, Any], str, gr.Request], list[Any]]:
        def move(state: dict[str, Any], token: str, request: gr.Request) -> list[Any]:
            session = guard(ctx, request)
            filters = filters_of(state)
            page = fetch(filters, state.get("cursor"), state.get("offset", 0))
            current = token.partition(":")[2]
            if current in page.ids:
                at = page.ids.index(current) + delta
            else:  # the item left the queue (decided elsewhere): the one now in its place is next
                old = state.get("ids") or []
                at = old.index(current) if current in old else 0
            found, at = walk(session, filters, page, at, delta)
            if at < 0:
                stay = current if current in page.ids else (page.ids[0] if page.ids else "")
                edge = "end" if delta > 0 else "start"
                return show(session, state, page, filters, stay, message=f"{edge} of the queue", kind="note")
            return show(session, state, found, filters, found.ids[at])

        return move

    def turn(which: str) -> Callable[[dict[str, Any], gr.Request], list[Any]]:
        def go(state: dict[str, Any], request: gr.Request) -> list[Any]:
            session = guard(ctx, request)
            filters = filters_of(state)
            cursor = state.get(which)
            if cursor is None:
                page = fetch(filters, state.get("cursor"), state.get("offset", 0))
            elif which == "next":
                page = fetch(filters, cursor, state.get("offset", 0) + len(state.get("ids") or []))
            else:
                page = fetch(filters, cursor, state.get("offset", 0) - ctx.config.page_size)
            page, at = walk(session, filters, page, 0, 1)
            return show(session, state, page, filters, page.ids[at] if at >= 0 else "")

        return go

    def decide(action: str) -> Callable[..., list[Any]]:
        def run(state: dict[str, Any], shown: str, token: str, cat: str | None, dec: str | None, reason: str | None,
                note_text: str, precedent: bool, amend_it: bool, request: gr.Request) -> list[Any]:  # fmt: skip
            session = guard(ctx, request)
            form = h.DecisionForm(token=token, category=cat, decision=dec, reason_code=reason, note=note_text or "",
                                  make_precedent=bool(precedent), amend=bool(amend_it))  # fmt: skip
            filters = filters_of(state)
            try:
                message = h.decide(ctx, session, action, form, showing=shown)
            except KuaimodError as exc:
                if isinstance(exc, h.ReviewError) and "another item" in str(exc):
                    # Show the item that is really on screen, with a fresh form.
                    page = fetch(filters, state.get("cursor"), state.get("offset", 0))
                    current = shown.partition(":")[2]
                    return show(session, state, page, filters, current if current in page.ids else "",
                                queued=current in page.ids, message=str(exc), kind="err")  # fmt: skip
                # Keep what the reviewer chose (they fix it and submit again); only the status changes.
                return [gr.update()] * (len(everything) - 1) + [status_html(str(exc), "err")]
            # The decided item leaves the queue (and its lease ends): open the item after it, without
            # recomputing anything but this page.
            state = {**state, "claimed": ""}
            old = state.get("ids") or []
            decided = token.partition(":")[2]
            page = fetch(filters, state.get("cursor"), state.get("offset", 0))
            after = old[old.index(decided) + 1 :] if decided in old else []
            fresh = [i for i, sid in enumerate(page.ids) if sid in after or sid not in old]
            page, at = walk(session, filters, page, fresh[0] if fresh else len(page.ids), 1)
            if at < 0:
                page, at = walk(session, filters, page, len(page.ids) - 1, -1)
            return show(session, state, page, filters, page.ids[at] if at >= 0 else "", message=message, kind="ok")

        return run

    def reveal(token: str, shown: str, request: gr.Request) -> list[Any]:
        session = guard(ctx, request)
        if not token or token != shown:
            return [gr.update(), gr.update(), status_html("select an item first", "err")]
        view = h.reveal_media(ctx, session, token)
        return [view.media, gr.update(visible=False), status_html(f"media of {view.sample_id} revealed", "note")]

    filters_in = [search, sort, category, version, showing, page_state]
    for trigger in (refresh.click, sort.input, category.input, version.input, search.submit):
        trigger(load, inputs=filters_in, outputs=everything, **LANE)
    demo.load(load, inputs=filters_in, outputs=everything, **LANE)
    queue.click(open_row, inputs=[page_state], outputs=everything, **LANE)
    next_btn.click(step(1), inputs=[page_state, showing], outputs=everything, **LANE)
    prev_btn.click(step(-1), inputs=[page_state, showing], outputs=everything, **LANE)
    next_page.click(turn("next"), inputs=[page_state], outputs=everything, **LANE)
    prev_page.click(turn("prev"), inputs=[page_state], outputs=everything, **LANE)
    form_in = [page_state, showing, form_token, ov_category, ov_decision, ov_reason, note, make_precedent, amend]
    agree_btn.click(decide("agree"), inputs=form_in, outputs=everything, **LANE)
    override_btn.click(decide("override"), inputs=form_in, outputs=everything, **LANE)
    reveal_btn.click(reveal, inputs=[form_token, showing], outputs=[media, reveal_btn, status],
                     **LANE)  # fmt: skip
