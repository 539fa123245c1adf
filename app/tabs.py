"""The evaluation and audit tabs (the policy editor is :mod:`app.policy_tab`)."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from . import evaluation as ev
from . import handlers as h
from .audit import AUDIT_HEADERS, audit_table
from .review import PRIVATE, ZOOM_JS, guard

GATE_HEADERS = ["kind", "candidate", "baseline", "passed", "target", "baseline value", "candidate value"]


def _frame(rows: list[list[Any]], headers: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=headers)


def evaluation_tab(ctx: h.ReviewContext, demo: gr.Blocks) -> None:
    """Latest report folders with their plots, the learning curve and the gate's decisions."""
    roots = ", ".join(f"`{r}`" for r in ctx.config.report_roots) or "(none)"
    gr.Markdown(f"Reports found under {roots} (start `kuaimod review` with `--reports DIR` to add folders).")
    with gr.Row():
        picked = gr.Dropdown([], label="Report", elem_id="km-report-pick", scale=3)
        refresh = gr.Button("Refresh", size="sm", elem_id="km-report-refresh", scale=0)
    reports = gr.Dataframe(value=_frame([], ev.REPORT_HEADERS), interactive=False, elem_id="km-reports", wrap=False)
    gr.Markdown("### Learning curve")
    curve = gr.HTML(elem_id="km-learning-curve-box")
    # The report's tables get the full width (numbers never wrap), the plots their natural size below.
    body = gr.Markdown(elem_id="km-report-md", elem_classes=["km-md-tables"])
    gr.Markdown("### Plots (click to enlarge)")
    plots = gr.HTML(elem_id="km-report-plots", js_on_load=ZOOM_JS)
    gr.Markdown("### Evaluation gate decisions")
    gates = gr.Dataframe(value=_frame([], GATE_HEADERS), interactive=False, elem_id="km-gates", wrap=False)

    def shown(folder: str | None) -> tuple[str, str]:
        found = {str(r.folder): r for r in ev.find_reports(ctx.config.report_roots)}
        info = found.get(folder or "")
        if info is None:
            return "", ""
        return ev.report_markdown(info), ev.plots_html(info)

    def show(folder: str | None, request: gr.Request) -> tuple[str, str]:
        guard(ctx, request)
        return shown(folder)

    def load(request: gr.Request) -> list[Any]:
        guard(ctx, request)
        found = ev.find_reports(ctx.config.report_roots)
        first = str(found[0].folder) if found else None
        md, images = shown(first)
        return [
            gr.update(choices=[str(r.folder) for r in found], value=first),
            _frame([r.row() for r in found], ev.REPORT_HEADERS),
            ev.learning_curve_html(found),
            md,
            images,
            _frame(_gate_rows(ctx), GATE_HEADERS),
        ]

    outputs = [picked, reports, curve, body, plots, gates]
    refresh.click(load, outputs=outputs, api_visibility=PRIVATE)
    demo.load(load, outputs=outputs, api_visibility=PRIVATE)
    picked.input(show, inputs=[picked], outputs=[body, plots], api_visibility=PRIVATE)


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
    table = gr.Dataframe(value=_frame([], AUDIT_HEADERS), interactive=False, elem_id="km-audit", wrap=False)

    def load(request: gr.Request) -> pd.DataFrame:
        guard(ctx, request)
        return _frame(audit_table(ctx.store, limit=500), AUDIT_HEADERS)

    refresh.click(load, outputs=[table], api_visibility=PRIVATE)
    demo.load(load, outputs=[table], api_visibility=PRIVATE)
