"""HTML for the item view. Every piece of sample or model text is escaped: it is untrusted."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.policy import Policy
from kuaimod_open.judge.verdict import TextSpan, Verdict

from .media import frame_data_url, safe_frame

TEXT_FIELDS = (("title", "Title"), ("ocr", "OCR"), ("asr", "ASR"), ("comments", "Comments"))
DECISION_COLOURS = {"allow": "#1a7f37", "restrict": "#9a6700", "review": "#0969da", "block": "#cf222e"}
# Inline styles, not classes: the HTML must look the same wherever it is embedded (and in screenshots).
BLUR_STYLE = "filter: blur(14px) grayscale(100%);"
_MARK = "background:#fff1a8;border-bottom:2px solid #d4a72c;padding:0 1px;"


def esc(value: Any) -> str:
    """HTML-escaped text."""
    return html.escape(str(value), quote=True)


def field_text(sample: Sample, field: str) -> str:
    """A sample's text field as the model saw it (comments one per line)."""
    return "\n".join(sample.comments) if field == "comments" else str(getattr(sample, field))


def frames_html(sample: Sample, verdict: Verdict, roots: Sequence[Path], *, blurred: bool) -> str:
    """The strip of sampled frames with timestamps; the frames the model cited are outlined."""
    if not sample.frames:
        return "<p><em>No frames were recorded for this sample.</em></p>"
    cited = {ref.position for ref in verdict.evidence.frames}
    cells = []
    for position, frame in enumerate(sample.frames, start=1):
        path = safe_frame(frame.path, roots)
        url = frame_data_url(path) if path is not None else None
        is_cited = position in cited
        border = "3px solid #cf222e" if is_cited else "1px solid #d0d7de"
        caption = esc(frame.label(position)) + (" <strong>cited</strong>" if is_cited else "")
        if url is None:
            body = (
                '<div style="width:160px;height:90px;display:flex;align-items:center;justify-content:center;'
                'background:#f6f8fa;color:#57606a;font-size:12px;text-align:center">'
                "not under a media root</div>"
            )
        else:
            style = "width:160px;height:auto;display:block;" + (BLUR_STYLE if blurred else "")
            body = f'<img alt="{esc(frame.label(position))}" src="{url}" style="{style}">'
        cells.append(
            f'<figure class="km-frame{" km-cited" if is_cited else ""}" data-position="{position}" '
            f'style="margin:0;padding:4px;border:{border};border-radius:6px;overflow:hidden">'
            f'{body}<figcaption style="font-size:12px;margin-top:4px">{caption}</figcaption></figure>'
        )
    note = (
        '<p style="color:#9a6700;margin:4px 0">Frames are blurred and grey for this high-severity category. '
        "Press <strong>Reveal frames</strong> (key V) to see them.</p>"
        if blurred
        else ""
    )
    return note + '<div style="display:flex;gap:8px;flex-wrap:wrap">' + "".join(cells) + "</div>"


def _merged(spans: list[TextSpan]) -> list[tuple[int, int]]:
    ranges = sorted((s.start, s.end) for s in spans if s.start is not None and s.end is not None)
    merged: list[tuple[int, int]] = []
    for start, end in ranges:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def highlight(text: str, spans: list[TextSpan]) -> str:
    """Escaped text with the cited (grounded) spans marked."""
    out, at = [], 0
    for start, end in _merged(spans):
        out += [esc(text[at:start]), f'<mark style="{_MARK}">{esc(text[start:end])}</mark>']
        at = end
    out.append(esc(text[at:]))
    return "".join(out)


def text_html(sample: Sample, verdict: Verdict) -> str:
    """Title, OCR, ASR and comments with the quotes the model cited highlighted."""
    parts = []
    for field, label in TEXT_FIELDS:
        text = field_text(sample, field)
        spans = [s for s in verdict.evidence.text if s.field == field]
        body = highlight(text, spans) if text else '<em style="color:#57606a">(empty)</em>'
        parts.append(
            f'<div class="km-field" data-field="{field}" style="margin-bottom:8px"><strong>{label}</strong>'
            f'<div style="white-space:pre-wrap;max-height:160px;overflow:auto">{body}</div></div>'
        )
    loose = [s for s in verdict.evidence.text if not s.grounded]
    if loose:
        quotes = "; ".join(f"{esc(s.field)}: “{esc(s.quote)}”" for s in loose)
        parts.append(f'<p style="color:#cf222e">Quotes not found in the text (may be hallucinated): {quotes}</p>')
    return "".join(parts)


def verdict_html(verdict: Verdict, policy: Policy) -> str:
    """Decision, categories, confidence, status and flags."""
    colour = DECISION_COLOURS.get(str(verdict.decision), "#57606a")
    cat = policy.find(verdict.category) if verdict.category else None
    category = f"{esc(cat.code)} · {esc(cat.tag)} · {esc(cat.name)}" if cat else esc(verdict.category or "none")
    rows = [
        ("category", category),
        ("other categories", esc(", ".join(verdict.other_categories) or "none")),
        ("confidence", "n/a" if verdict.confidence is None else f"{verdict.confidence:.2f}"),
        ("status / stage", f"{esc(verdict.status)} / {esc(verdict.stage)}"),
        ("flags", esc(", ".join(verdict.flags) or "none")),
    ]
    if cat is not None:
        rows.append(("policy action / severity", f"{esc(cat.action)} / {esc(cat.severity)}"))
    if verdict.summary:
        rows.append(("summary", esc(verdict.summary)))
    if verdict.error:
        rows.append(("error", esc(verdict.error)))
    table = "".join(f'<tr><th style="text-align:left;padding-right:12px">{k}</th><td>{v}</td></tr>' for k, v in rows)
    badge = (
        f'<span class="km-decision" style="background:{colour};color:white;padding:2px 10px;border-radius:12px;'
        f'font-weight:600">{esc(verdict.decision)}</span>'
    )
    return f"<div>{badge}<table style='margin-top:6px'>{table}</table></div>"


def provenance_html(verdict: Verdict) -> str:
    """Everything needed to reproduce the verdict."""
    p = verdict.provenance
    stamps = ", ".join("?" if t is None else f"{t:.2f}s" for t in p.frame_timestamps) or "none"
    rows = [
        ("model", p.model),
        ("adapter", p.adapter or "none"),
        ("policy", f"{p.policy_version} ({p.policy_digest})"),
        ("prompt digest", p.prompt_digest),
        ("generation digest", p.generate_digest or "n/a"),
        ("frame timestamps", stamps),
        ("package", p.package_version),
        ("created", p.created_at.isoformat(timespec="seconds")),
    ]
    return (
        "<table>"
        + "".join(f"<tr><th style='text-align:left'>{k}</th><td>{esc(v)}</td></tr>" for k, v in rows)
        + ("</table>")
    )


def precedents_html(precedents: list[dict[str, Any]], recorded: bool) -> str:
    """The decided cases the model was shown with this video."""
    if not recorded:
        return "<p><em>This verdict does not record which precedents were shown.</em></p>"
    if not precedents:
        return "<p><em>No precedents were shown.</em></p>"
    items = "".join(
        f"<li><strong>#{esc(p['id'])}</strong> {esc(p['category'])} / {esc(p['decision'])}"
        f"{' (retired)' if p.get('retired_at') else ''}: {esc(p['text'][:200])}"
        f"{' — ' + esc(p['reason']) if p.get('reason') else ''}</li>"
        for p in precedents
    )
    return f"<ol>{items}</ol>"
