"""The policy editor, evaluation and audit tabs."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from kuaimod_open.errors import ConfigError, KuaimodError, PolicyError

from . import evaluation as ev
from . import handlers as h
from . import policy_editor as pe
from .audit import AUDIT_HEADERS, audit_table

GATE_HEADERS = ["kind", "candidate", "baseline", "passed", "target", "baseline value", "candidate value"]


def _frame(rows: list[list[Any]], headers: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=headers)


def _reviewer(request: gr.Request | None, typed: str, ctx: h.ReviewContext) -> str:
    return h.resolve_reviewer(getattr(request, "username", None), typed, ctx.config.default_reviewer)


def _version_choices(ctx: h.ReviewContext) -> list[tuple[str, int]]:
    return [(f"{row[1]} (id {row[0]}, {row[2]})", int(row[0])) for row in pe.history_rows(ctx)]


def policy_tab(ctx: h.ReviewContext, reviewer: gr.Textbox, demo: gr.Blocks) -> None:
    """Edit the YAML (validated as you type), preview the prompt, dry-run, save, history, rollback."""
    gr.Markdown(
        "Edit the policy below. It is checked with the same loader as the CLI; **Save** writes a new version "
        "file and registers it (bump `version` first). Nothing is changed in place."
    )
    with gr.Row():
        with gr.Column(scale=3):
            editor = gr.Code(
                value=pe.active_text(ctx), language="yaml", lines=26, max_lines=26, label="policy.yaml",
                elem_id="km-policy-editor", interactive=True,
            )  # fmt: skip
            errors = gr.Textbox(
                label="Validation", lines=3, max_lines=12, interactive=False, elem_id="km-policy-errors"
            )
        with gr.Column(scale=2):
            note = gr.Textbox(label="Change note", elem_id="km-policy-note")
            activate = gr.Checkbox(label="Activate after saving", elem_id="km-policy-activate")
            save_btn = gr.Button("Save as new version", variant="primary", elem_id="km-policy-save")
            status = gr.Markdown(elem_id="km-policy-status")
            with gr.Row():
                preview_btn = gr.Button("Preview prompt", elem_id="km-policy-preview-btn", size="sm")
                dry_btn = gr.Button("Dry run on stored samples", elem_id="km-policy-dry-btn", size="sm")
            preview_sample = gr.Textbox(label="Preview with sample id (optional)", elem_id="km-preview-sample")
            dry_out = gr.Textbox(label="Dry run", lines=8, max_lines=20, interactive=False, elem_id="km-dry-run")
    preview = gr.Textbox(
        label="Rendered prompt", lines=10, max_lines=30, interactive=False, elem_id="km-prompt-preview"
    )
    gr.Markdown("### History")
    history = gr.Dataframe(
        value=_frame(pe.history_rows(ctx), pe.HISTORY_HEADERS), interactive=False, elem_id="km-policy-history"
    )
    with gr.Row():
        picked = gr.Dropdown(_version_choices(ctx), label="Version", elem_id="km-policy-version")
        diff_btn = gr.Button("Show diff", size="sm", elem_id="km-policy-diff-btn")
        activate_btn = gr.Button("Activate this version", size="sm", elem_id="km-policy-activate-btn")
        rollback_btn = gr.Button("Roll back to the previous active version", size="sm", elem_id="km-policy-rollback")
    diff = gr.Code(language=None, label="Diff against the version before it", interactive=False, elem_id="km-diff")

    def check(text: str) -> str:
        policy, error = pe.validate(text)
        if policy is None:
            return error
        return f"✔ valid: {policy.name} v{policy.version} ({len(policy.categories)} categories, digest {policy.digest})"

    def listing() -> tuple[pd.DataFrame, Any]:
        return _frame(pe.history_rows(ctx), pe.HISTORY_HEADERS), gr.update(choices=_version_choices(ctx))

    def save(text: str, note_text: str, act: bool, typed: str, request: gr.Request) -> list[Any]:
        try:
            art = pe.save(ctx, text, _reviewer(request, typed, ctx), note_text, act)
        except PolicyError as exc:
            return [str(exc), "⚠ Not saved: the policy is invalid (see Validation).", *listing(), gr.update()]
        except (ConfigError, KuaimodError) as exc:
            return [check(text), f"⚠ Not saved: {exc}", *listing(), gr.update()]
        table, choices = listing()
        message = f"✔ Saved policy version {art.name} (id {art.id}, {art.status}) to {art.path}"
        return [check(text), message, table, choices, pe.active_text(ctx) if act else gr.update()]

    def dry(text: str, typed: str, request: gr.Request) -> str:
        try:
            return pe.dry_run(ctx, text, _reviewer(request, typed, ctx))
        except KuaimodError as exc:
            return f"⚠ {exc}"

    def activate_version(version_id: int | None, typed: str, request: gr.Request) -> list[Any]:
        if version_id is None:
            return ["Pick a version first.", *listing(), gr.update()]
        try:
            art = pe.activate(ctx, _reviewer(request, typed, ctx), int(version_id))
        except KuaimodError as exc:
            return [f"⚠ {exc}", *listing(), gr.update()]
        return [f"✔ Active policy is now {art.name} (id {art.id})", *listing(), pe.active_text(ctx)]

    def roll_back(typed: str, request: gr.Request) -> list[Any]:
        try:
            art = pe.rollback(ctx, _reviewer(request, typed, ctx))
        except KuaimodError as exc:
            return [f"⚠ {exc}", *listing(), gr.update()]
        return [f"✔ Rolled back: active policy is {art.name} (id {art.id})", *listing(), pe.active_text(ctx)]

    editor.change(check, inputs=[editor], outputs=[errors], trigger_mode="always_last", show_progress="hidden")
    save_btn.click(save, inputs=[editor, note, activate, reviewer], outputs=[errors, status, history, picked, editor])
    preview_btn.click(lambda t, s: pe.prompt_preview(ctx, t, s or None), inputs=[editor, preview_sample],
                      outputs=[preview])  # fmt: skip
    dry_btn.click(dry, inputs=[editor, reviewer], outputs=[dry_out])
    diff_btn.click(lambda i: pe.version_diff(ctx, int(i)) if i is not None else "Pick a version first.",
                   inputs=[picked], outputs=[diff])  # fmt: skip
    activate_btn.click(activate_version, inputs=[picked, reviewer], outputs=[status, history, picked, editor])
    rollback_btn.click(roll_back, inputs=[reviewer], outputs=[status, history, picked, editor])
    demo.load(check, inputs=[editor], outputs=[errors])


def evaluation_tab(ctx: h.ReviewContext, demo: gr.Blocks) -> None:
    """Latest report folders with their plots, the learning curve and the gate's decisions."""
    roots = ", ".join(f"`{r}`" for r in ctx.config.report_roots) or "(none)"
    gr.Markdown(f"Reports found under {roots} (start `kuaimod review` with `--reports DIR` to add folders).")
    with gr.Row():
        picked = gr.Dropdown([], label="Report", elem_id="km-report-pick", scale=3)
        refresh = gr.Button("Refresh", size="sm", elem_id="km-report-refresh", scale=0)
    reports = gr.Dataframe(value=_frame([], ev.REPORT_HEADERS), interactive=False, elem_id="km-reports")
    gr.Markdown("### Learning curve")
    curve = gr.HTML(elem_id="km-learning-curve-box")
    with gr.Row():
        with gr.Column(scale=1):
            plots = gr.HTML(elem_id="km-report-plots")
        with gr.Column(scale=1):
            body = gr.Markdown(elem_id="km-report-md")
    gr.Markdown("### Evaluation gate decisions")
    gates = gr.Dataframe(value=_frame([], GATE_HEADERS), interactive=False, elem_id="km-gates")

    def show(folder: str | None) -> tuple[str, str]:
        found = {str(r.folder): r for r in ev.find_reports(ctx.config.report_roots)}
        info = found.get(folder or "")
        if info is None:
            return "", ""
        return ev.report_markdown(info), ev.plots_html(info)

    def load() -> list[Any]:
        found = ev.find_reports(ctx.config.report_roots)
        first = str(found[0].folder) if found else None
        md, images = show(first)
        return [
            gr.update(choices=[str(r.folder) for r in found], value=first),
            _frame([r.row() for r in found], ev.REPORT_HEADERS),
            ev.learning_curve_html(found),
            md,
            images,
            _frame(_gate_rows(ctx), GATE_HEADERS),
        ]

    outputs = [picked, reports, curve, body, plots, gates]
    refresh.click(load, outputs=outputs)
    demo.load(load, outputs=outputs)
    picked.input(show, inputs=[picked], outputs=[body, plots])


def _gate_rows(ctx: h.ReviewContext) -> list[list[Any]]:
    from kuaimod_open.loop.gate import decisions

    rows = []
    for d in reversed(decisions(ctx.store)):
        rows.append([d.kind, d.candidate, d.baseline, "yes" if d.passed else "no", d.target,
                     round(d.baseline_metrics.get(d.target, float("nan")), 4),
                     round(d.candidate_metrics.get(d.target, float("nan")), 4)])  # fmt: skip
    return rows


def audit_tab(ctx: h.ReviewContext, demo: gr.Blocks) -> None:
    """Every action taken in the UI, newest first."""
    refresh = gr.Button("Refresh", size="sm", elem_id="km-audit-refresh")
    table = gr.Dataframe(value=_frame([], AUDIT_HEADERS), interactive=False, elem_id="km-audit")

    def load() -> pd.DataFrame:
        return _frame(audit_table(ctx.store, limit=500), AUDIT_HEADERS)

    refresh.click(load, outputs=[table])
    demo.load(load, outputs=[table])
