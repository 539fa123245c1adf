"""The policy editor tab: edit (validated as you type, the error line marked), preview, dry run, save,
history with coloured diffs, and admin-only activation and rollback behind a confirmation."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from kuaimod_open.errors import ConfigError, KuaimodError, PolicyError

from . import handlers as h
from . import policy_editor as pe
from . import render
from .access import AccessError
from .review import PRIVATE, guard

# Mark the error line in the CodeMirror editor and scroll it into view. The mark is an overlay in the
# scroller (CodeMirror owns the line elements and would undo changes made to them).
MARK_ERROR_JS = """(lines) => {
  const root = document.querySelector('#km-policy-editor');
  if (!root) return;
  root.querySelectorAll('.km-error-line').forEach((e) => e.remove());
  const scroller = root.querySelector('.cm-scroller');
  const wanted = String(lines || '').split(',').filter((x) => x).map(Number);
  if (!wanted.length || !scroller) return;
  const sample = root.querySelector('.cm-line');
  const height = sample ? sample.getBoundingClientRect().height || 20 : 20;
  scroller.scrollTop = Math.max(0, (wanted[0] - 6) * height);
  const place = (line, tries) => {
    const gutter = Array.from(root.querySelectorAll('.cm-lineNumbers .cm-gutterElement'))
      .find((g) => g.textContent.trim() === String(line));
    if (!gutter) { if (tries > 0) setTimeout(() => place(line, tries - 1), 60); return; }
    const top = gutter.getBoundingClientRect().top - scroller.getBoundingClientRect().top + scroller.scrollTop;
    const mark = document.createElement('div');
    mark.className = 'km-error-line';
    mark.dataset.line = String(line);
    mark.style.cssText = 'position:absolute;left:0;right:0;top:' + top + 'px;height:' +
      gutter.getBoundingClientRect().height + 'px;background:rgba(207,34,46,.18);' +
      'border-left:4px solid #cf222e;pointer-events:none;z-index:3';
    if (getComputedStyle(scroller).position === 'static') scroller.style.position = 'relative';
    scroller.appendChild(mark);
  };
  setTimeout(() => wanted.forEach((line) => place(line, 10)), 60);
}"""


def _frame(rows: list[list[Any]], headers: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=headers)


def _version_choices(ctx: h.ReviewContext) -> list[tuple[str, int]]:
    return [(f"{row[1]} (id {row[0]}, {row[2]})", int(row[0])) for row in pe.history_rows(ctx)]


def policy_tab(ctx: h.ReviewContext, demo: gr.Blocks) -> None:
    """Edit the YAML, preview the prompt, dry-run, save; history, diff; admins activate and roll back."""
    gr.Markdown(
        "Edit the policy below. It is checked with the same loader as the CLI; **Save** writes a new candidate "
        "version (bump `version` first). Nothing is changed in place; only a policy admin activates a version "
        "or rolls back, after confirming."
    )
    pending = gr.State(None)
    with gr.Row():
        with gr.Column(scale=3):
            editor = gr.Code(
                value=pe.active_text(ctx), language="yaml", lines=24, max_lines=24, label="policy.yaml",
                elem_id="km-policy-editor", interactive=True,
            )  # fmt: skip
            errors = gr.Textbox(label="Validation", lines=2, max_lines=8, interactive=False,
                                elem_id="km-policy-errors")  # fmt: skip
            err_line = gr.Textbox(visible=False, elem_id="km-policy-error-lines")
        with gr.Column(scale=2):
            note = gr.Textbox(label="Change note", elem_id="km-policy-note")
            save_btn = gr.Button("Save as new version", variant="primary", elem_id="km-policy-save")
            status = gr.HTML(elem_id="km-policy-status")
            with gr.Row():
                preview_btn = gr.Button("Preview prompt", elem_id="km-policy-preview-btn", size="sm")
                dry_btn = gr.Button("Dry run on stored samples", elem_id="km-policy-dry-btn", size="sm")
            preview_sample = gr.Textbox(label="Preview with sample id (optional)", elem_id="km-preview-sample")
            dry_summary = gr.Markdown(elem_id="km-dry-run")
            dry_metrics = gr.Dataframe(value=_frame([], pe.METRIC_HEADERS), interactive=False, label="Metrics",
                                       elem_id="km-dry-metrics", wrap=False)  # fmt: skip
            dry_flips = gr.Dataframe(value=_frame([], pe.FLIP_HEADERS), interactive=False, label="Flips",
                                     elem_id="km-dry-flips", max_height=260, wrap=False)  # fmt: skip
    preview = gr.Textbox(label="Rendered prompt", lines=8, max_lines=30, interactive=False,
                         elem_id="km-prompt-preview")  # fmt: skip
    gr.Markdown("### History")
    history = gr.Dataframe(value=_frame(pe.history_rows(ctx), pe.HISTORY_HEADERS), interactive=False,
                           elem_id="km-policy-history", wrap=False)  # fmt: skip
    with gr.Row():
        picked = gr.Dropdown(_version_choices(ctx), label="Version", elem_id="km-policy-version")
        diff_btn = gr.Button("Show diff", size="sm", elem_id="km-policy-diff-btn")
        activate_btn = gr.Button("Activate this version…", size="sm", elem_id="km-policy-activate-btn")
        rollback_btn = gr.Button("Roll back to the previous active version…", size="sm",
                                 elem_id="km-policy-rollback")  # fmt: skip
    with gr.Group(visible=False, elem_id="km-confirm") as confirm_box:
        question = gr.Markdown(elem_id="km-confirm-question")
        with gr.Row():
            confirm_btn = gr.Button("Confirm", variant="stop", elem_id="km-confirm-yes", size="sm")
            cancel_btn = gr.Button("Cancel", elem_id="km-confirm-no", size="sm")
    diff = gr.HTML(elem_id="km-diff")

    def check(text: str, request: gr.Request) -> tuple[str, str]:
        guard(ctx, request)
        return pe.check_message(text)

    def edited(request: gr.Request) -> str:
        guard(ctx, request)
        return ""  # any edit makes the last save/activation message stale

    def listing() -> tuple[pd.DataFrame, Any]:
        return _frame(pe.history_rows(ctx), pe.HISTORY_HEADERS), gr.update(choices=_version_choices(ctx))

    def save(text: str, note_text: str, request: gr.Request) -> list[Any]:
        session = guard(ctx, request)
        message, line = pe.check_message(text)
        try:
            art = pe.save(ctx, text, session, note_text)
        except PolicyError:
            return [message, line, "⚠ Not saved: the policy is invalid (see Validation).", *listing(), gr.update(),
                    gr.update()]  # fmt: skip
        except (ConfigError, KuaimodError) as exc:
            return [message, line, f"⚠ Not saved: {render.esc(exc)}", *listing(), gr.update(), gr.update()]
        table, _ = listing()
        done = f"✔ Saved policy version {render.esc(art.name)} (id {art.id}) as a candidate."
        if session.is_admin:
            done += " Pick it under History and activate it when it is ready."
        return [message, "", done, table, gr.update(choices=_version_choices(ctx), value=art.id), "", ""]

    def dry(text: str, request: gr.Request) -> list[Any]:
        session = guard(ctx, request)
        result = pe.dry_run(ctx, text, session)
        summary = result.summary + ("\n\n" + "\n".join(f"- `{c}`" for c in result.changes) if result.changes else "")
        return [summary, _frame(result.metrics, pe.METRIC_HEADERS), _frame(result.flips, pe.FLIP_HEADERS)]

    def ask(which: str) -> Any:
        def run(version_id: int | None, request: gr.Request) -> list[Any]:
            session = guard(ctx, request)
            try:
                if which == "activate":
                    if version_id is None:
                        return [None, gr.update(visible=False), "", "Pick a version first."]
                    question_ = pe.ask_activate(ctx, session, int(version_id))
                else:
                    question_ = pe.ask_rollback(ctx, session)
            except (AccessError, KuaimodError) as exc:
                return [None, gr.update(visible=False), "", f"⚠ {render.esc(exc)}"]
            return [question_, gr.update(visible=True), f"**{question_.question}**", ""]

        return run

    def confirm(waiting: pe.Pending | None, request: gr.Request) -> list[Any]:
        session = guard(ctx, request)
        hidden = [None, gr.update(visible=False), ""]
        if waiting is None:
            return [*hidden, "Nothing to confirm.", *[gr.update()] * 10]
        try:
            art = pe.confirm(ctx, session, waiting)
        except (AccessError, KuaimodError) as exc:
            return [*hidden, f"⚠ {render.esc(exc)}", *[gr.update()] * 10]
        # Everything now shows the active version: the editor, its validation, the preview; the dry run and
        # diff of the version that was on screen are cleared.
        text = pe.active_text(ctx)
        message, line = pe.check_message(text)
        table, choices = listing()
        verb = "Activated" if waiting.action == "activate" else "Rolled back"
        done = f"✔ {verb}: the active policy is now {render.esc(art.name)} (id {art.id})."
        return [*hidden, done, text, message, line, pe.prompt_preview(ctx, text, None), "", "",
                _frame([], pe.METRIC_HEADERS), _frame([], pe.FLIP_HEADERS), table, choices]  # fmt: skip

    def cancel(request: gr.Request) -> list[Any]:
        guard(ctx, request)
        return [None, gr.update(visible=False), "", "Cancelled: nothing changed."]

    def show_diff(version_id: int | None, request: gr.Request) -> str:
        guard(ctx, request)
        if version_id is None:
            return "<p>Pick a version first.</p>"
        return pe.diff_html(pe.version_diff(ctx, int(version_id)))

    def roles(request: gr.Request) -> list[Any]:
        session = guard(ctx, request)
        tip = gr.update(interactive=session.is_admin)
        return [tip, tip]

    def preview_prompt(text: str, sample: str, request: gr.Request) -> str:
        guard(ctx, request)
        return pe.prompt_preview(ctx, text, sample or None)

    mark: dict[str, Any] = {"fn": None, "js": MARK_ERROR_JS, "inputs": [err_line], "api_visibility": PRIVATE}
    editor.change(check, inputs=[editor], outputs=[errors, err_line], trigger_mode="always_last",
                  show_progress="hidden", api_visibility=PRIVATE).then(**mark)  # fmt: skip
    editor.input(edited, outputs=[status], show_progress="hidden", api_visibility=PRIVATE)
    save_btn.click(save, inputs=[editor, note], outputs=[errors, err_line, status, history, picked, diff, note],
                   api_visibility=PRIVATE).then(**mark)  # fmt: skip
    preview_btn.click(preview_prompt, inputs=[editor, preview_sample], outputs=[preview], api_visibility=PRIVATE)
    dry_btn.click(dry, inputs=[editor], outputs=[dry_summary, dry_metrics, dry_flips], api_visibility=PRIVATE)
    diff_btn.click(show_diff, inputs=[picked], outputs=[diff], api_visibility=PRIVATE)
    asked = [pending, confirm_box, question, status]
    activate_btn.click(ask("activate"), inputs=[picked], outputs=asked, api_visibility=PRIVATE)
    rollback_btn.click(ask("rollback"), inputs=[picked], outputs=asked, api_visibility=PRIVATE)
    cancel_btn.click(cancel, outputs=asked, api_visibility=PRIVATE)
    confirm_btn.click(
        confirm, inputs=[pending],
        outputs=[*asked[:3], status, editor, errors, err_line, preview, diff, dry_summary, dry_metrics, dry_flips,
                 history, picked],
        api_visibility=PRIVATE,
    ).then(**mark)  # fmt: skip
    demo.load(check, inputs=[editor], outputs=[errors, err_line], api_visibility=PRIVATE)
    demo.load(roles, outputs=[activate_btn, rollback_btn], api_visibility=PRIVATE)
