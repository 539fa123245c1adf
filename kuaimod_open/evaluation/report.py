"""Write an evaluation report directory: report.json, report.md, PNG plots, official prediction files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from kuaimod_open._lazy import require
from kuaimod_open.evaluation.metrics import EvalReport, binary_judgement, multi_judgement
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.policy import Policy
from kuaimod_open.judge.verdict import Verdict

PAPER_COLUMNS = ("accuracy", "violative_precision", "violative_recall", "benign_precision", "benign_recall")


def paper_results() -> dict[str, Any]:
    """The KuaiMod paper's published binary results (full 1,000-video benchmark)."""
    text = resources.files("kuaimod_open").joinpath("data/paper_results.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def write_predictions(out_dir: Path, samples: Sequence[Sample], verdicts: Sequence[Verdict], policy: Policy) -> None:
    """Official-format files, so our runs can be scored by the benchmark's own scripts and vice versa."""
    by_id = {v.sample_id: v for v in verdicts}
    with (
        (out_dir / "predictions_binary.jsonl").open("w", encoding="utf-8") as binary,
        (out_dir / "predictions_multi.jsonl").open("w", encoding="utf-8") as multi,
    ):
        for sample in samples:
            verdict = by_id[sample.id]
            binary.write(
                json.dumps({"tag": sample.label, "judgement": binary_judgement(verdict, policy)}, ensure_ascii=False)
                + "\n"
            )
            multi.write(
                json.dumps({"tag": sample.label, "judgement": multi_judgement(verdict)}, ensure_ascii=False) + "\n"
            )


def write_report(report: EvalReport, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
    """Write report.json, report.md and (with matplotlib installed) the PNG plots; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json", out / "report.md"]
    written[0].write_text(report.model_dump_json(indent=2), encoding="utf-8")
    png: list[Path] = []
    if plots:
        png = [plot_confusion(report, out / "confusion_matrix.png"), plot_recall(report, out / "category_recall.png")]
    written[1].write_text(render_markdown(report, [p.name for p in png]), encoding="utf-8")
    return written + png


def _row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells) + " |"


def render_markdown(report: EvalReport, images: Sequence[str] = ()) -> str:
    """The human-readable report."""
    ob, om, sb = report.official_binary, report.official_multi, report.strict_binary
    lines = ["# KuaiMod benchmark evaluation", ""]
    prov = report.provenance
    lines += [
        f"- samples: {report.n}; model: {', '.join(prov.get('model', []))}; "
        f"adapter: {', '.join(prov.get('adapter', []))}",
        f"- policy: {', '.join(prov.get('policy_version', []))} ({', '.join(prov.get('policy_digest', []))}); "
        f"prompt: {', '.join(prov.get('prompt_digest', []))}; package {report.package_version}",
        f"- created: {report.created_at.isoformat(timespec='seconds')}",
    ]
    if report.text_only:
        lines += ["", "> **Text-only run**: no frames were available, the judge saw title, OCR and ASR only."]
    lines += ["", "## Binary task, side by side with the paper", ""]
    lines += ["The paper's rows are on the full 1,000-video benchmark; ours on the data given above.", ""]
    lines += ["| method | accuracy | violative P | violative R | benign P | benign R |", "|---|---|---|---|---|---|"]
    lines.append(
        _row(
            [
                "**this run, official binary script**",
                ob.accuracy,
                ob.violative_precision,
                ob.violative_recall,
                ob.benign_precision,
                ob.benign_recall,
            ]
        )
    )
    acc = om.accuracy if om.accuracy is not None else float("nan")
    lines.append(
        _row(
            [
                f"**this run, official multi-class script** (coverage {om.coverage:.1%})",
                acc,
                om.violative_precision,
                om.violative_recall,
                om.benign_precision,
                om.benign_recall,
            ]
        )
    )
    lines.append(
        _row(
            [
                "**this run, strict** (no answer = wrong)",
                sb.accuracy,
                sb.violative_precision,
                sb.violative_recall,
                sb.benign_precision,
                sb.benign_recall,
            ]
        )
    )
    for name, values in paper_results()["rows"].items():
        lines.append(_row([f"paper: {name}", *values]))
    lines += [
        "",
        "## Recall per primary group (violative rows)",
        "",
        "| group | official binary | official multi-class |",
        "|---|---|---|",
    ]
    for group in sorted(set(ob.group_recall) | set(om.group_recall)):
        lines.append(_row([group, ob.group_recall.get(group, "-"), om.group_recall.get(group, "-")]))
    if ob.group_uncounted:
        lines.append(
            f"\n{ob.group_uncounted} violative rows had neither 是 nor 否 and are not counted per group "
            "by the official binary script."
        )
    lines += [
        "",
        "## Per category",
        "",
        f"Category accuracy {report.category_accuracy:.3f}, macro-F1 {report.macro_f1:.3f} "
        "(over categories that occur in gold or predictions).",
        "",
        "| code | tag | support | predicted | precision | recall | F1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in report.categories:
        lines.append(_row([c.code, c.tag, c.support, c.predicted, c.precision, c.recall, c.f1]))
    lines += [
        "",
        "## Verdicts",
        "",
        f"- review share {report.review_share:.1%}, unparsed {report.unparsed_share:.1%}, "
        f"errors {report.error_share:.1%}",
        "- decisions: " + ", ".join(f"{k}={v}" for k, v in sorted(report.decisions.items())),
        "- parse status: " + ", ".join(f"{k}={v}" for k, v in sorted(report.statuses.items())),
        "- stage: " + ", ".join(f"{k}={v}" for k, v in sorted(report.stages.items())),
    ]
    for name, dist in (
        ("latency (s)", report.latency_s),
        ("input tokens", report.input_tokens),
        ("output tokens", report.output_tokens),
    ):
        if dist is not None:
            lines.append(f"- {name}: mean {dist.mean:.3f}, p50 {dist.p50:.3f}, p95 {dist.p95:.3f} (n={dist.n})")
    for image in images:
        lines += ["", f"![{image}]({image})"]
    return "\n".join(lines) + "\n"


def _pyplot() -> Any:
    matplotlib = require("matplotlib", extra="eval", purpose="report plots")
    matplotlib.use("Agg")  # no display on servers
    return require("matplotlib.pyplot", extra="eval", purpose="report plots")


def plot_confusion(report: EvalReport, path: Path) -> Path:
    """Confusion matrix (gold rows × predicted columns), row-normalised colours, raw counts printed."""
    plt = _pyplot()
    import numpy as np

    counts = np.array(report.confusion, dtype=float)
    norm = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(11, 9))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    # ASCII codes, not Chinese tags: servers rarely have a CJK font and tags would render as boxes.
    ax.set_xticks(range(len(report.confusion_labels)), report.confusion_labels, rotation=70, ha="right", fontsize=8)
    ax.set_yticks(range(len(report.confusion)), report.confusion_labels[: len(report.confusion)], fontsize=8)
    for i, row in enumerate(counts):
        for j, value in enumerate(row):
            if value:
                ax.text(
                    j,
                    i,
                    int(value),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(f"Confusion matrix (n={report.n})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_recall(report: EvalReport, path: Path) -> Path:
    """Recall per category, with the support printed on each bar."""
    plt = _pyplot()
    cats = [c for c in report.categories if c.support > 0]
    fig, ax = plt.subplots(figsize=(10, 5))
    ax.bar([c.code for c in cats], [c.recall for c in cats], color="#4c72b0")
    for i, c in enumerate(cats):
        ax.text(i, c.recall + 0.02, f"n={c.support}", ha="center", fontsize=7)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("recall")
    ax.set_title("Recall per category")
    ax.tick_params(axis="x", rotation=60, labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
