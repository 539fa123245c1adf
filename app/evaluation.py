"""The evaluation tab: the latest report folders (report.json, report.md, PNG plots) and the learning curve."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .render import esc

REPORT_HEADERS = ["created (UTC)", "folder", "n", "strict acc.", "official acc.", "violative R", "macro-F1"]
MAX_DEPTH = 3  # runs/<name>/report.json, runs/<group>/<name>/report.json
_IMAGE_LINE = re.compile(r"^!\[[^\]]*\]\([^)]*\)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class ReportInfo:
    """The headline numbers of one report folder."""

    folder: Path
    created_at: datetime
    n: int
    strict_accuracy: float
    official_accuracy: float
    violative_recall: float
    macro_f1: float

    def row(self) -> list[object]:
        """A display row (see :data:`REPORT_HEADERS`)."""
        return [
            self.created_at.strftime("%Y-%m-%d %H:%M"),
            str(self.folder),
            self.n,
            round(self.strict_accuracy, 3),
            round(self.official_accuracy, 3),
            round(self.violative_recall, 3),
            round(self.macro_f1, 3),
        ]


def _read(path: Path) -> ReportInfo | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ReportInfo(
            folder=path.parent,
            created_at=datetime.fromisoformat(str(data["created_at"]).replace("Z", "+00:00")),
            n=int(data["n"]),
            strict_accuracy=float(data["strict_binary"]["accuracy"]),
            official_accuracy=float(data["official_binary"]["accuracy"]),
            violative_recall=float(data["strict_binary"]["violative_recall"]),
            macro_f1=float(data["macro_f1"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not one of our reports, or a torn write: skip it rather than break the tab


def find_reports(roots: Sequence[Path]) -> list[ReportInfo]:
    """Report folders under ``roots`` (a root may itself be one), newest first."""
    found: dict[Path, ReportInfo] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        candidates = [root / "report.json"] + [
            p for depth in range(1, MAX_DEPTH + 1) for p in root.glob("/".join(["*"] * depth) + "/report.json")
        ]
        for path in candidates:
            info = _read(path) if path.is_file() else None
            if info is not None:
                found[path.resolve()] = info
    return sorted(found.values(), key=lambda r: r.created_at, reverse=True)


def png_data_url(path: Path) -> str | None:
    """A PNG file as a data URL, if it really is an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def report_markdown(info: ReportInfo) -> str:
    """report.md without its image lines (the plots are shown beside it)."""
    path = info.folder / "report.md"
    if not path.is_file():
        return f"`{info.folder}` has no report.md"
    return _IMAGE_LINE.sub("", path.read_text(encoding="utf-8"))


def plots_html(info: ReportInfo) -> str:
    """The report's PNG plots (confusion matrix, per-category recall, any learning curve) inline."""
    images = []
    for path in sorted(info.folder.glob("*.png")):
        url = png_data_url(path)
        if url is not None:
            images.append(
                f'<figure style="margin:0 0 12px 0"><img class="km-zoomable" alt="{esc(path.name)}" src="{url}" '
                f'style="max-width:100%;cursor:zoom-in"><figcaption>{esc(path.name)}</figcaption></figure>'
            )
    return "".join(images) or "<p><em>This report has no plots (it was written with --no-plots).</em></p>"


def learning_curve_html(reports: Sequence[ReportInfo]) -> str:
    """Headline metrics of every report over time, as an inline PNG (needs matplotlib)."""
    if len(reports) < 1:
        return "<p><em>No evaluation reports found yet: run <code>kuaimod eval ... --report runs/NAME</code>.</em></p>"
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on servers
        import matplotlib.pyplot as plt
    except ImportError:
        return "<p><em>The learning curve needs matplotlib: pip install 'kuaimod_open[eval]'.</em></p>"
    ordered = sorted(reports, key=lambda r: r.created_at)
    x = list(range(1, len(ordered) + 1))
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for label, values in (
        ("strict accuracy", [r.strict_accuracy for r in ordered]),
        ("official accuracy", [r.official_accuracy for r in ordered]),
        ("violative recall", [r.violative_recall for r in ordered]),
        ("macro-F1", [r.macro_f1 for r in ordered]),
    ):
        ax.plot(x, values, marker="o", label=label)
    ax.set_xticks(x, [r.created_at.strftime("%m-%d %H:%M") for r in ordered], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("evaluation run (oldest to newest)")
    ax.set_title("Learning curve")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: lines often sit bottom-right
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img id="km-learning-curve" alt="learning curve" src="{url}" style="max-width:100%">'
