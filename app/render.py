"""HTML for the review app. Every piece of sample, model or user text is escaped: it is untrusted.

Styles are inline where they carry meaning (blur, highlights, colours), so the HTML looks and
protects the same wherever it is embedded; layout classes are styled by the app's CSS.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.flags import REVIEW_TEXT, Flag, parse
from kuaimod_open.judge.policy import Policy
from kuaimod_open.judge.verdict import Stage, TextSpan, Verdict

from .queue_source import QueuePage

TEXT_FIELDS = (("title", "Title"), ("ocr", "OCR"), ("asr", "ASR"), ("comments", "Comments"))
DECISION_COLOURS = {"allow": "#1a7f37", "restrict": "#9a6700", "review": "#0969da", "block": "#cf222e"}
BLUR_STYLE = "filter: blur(18px) grayscale(100%);"
FRAME_WIDTH = 240  # px in the strip; the inline image is larger (see media.ZOOM_SIDE) for click-to-zoom
_MARK = "background:#fff1a8;border-bottom:2px solid #d4a72c;padding:0 1px;"
# What the benchmark and some exports write for "no value"; shown as an empty field, never as text.
PLACEHOLDERS = frozenset({"null", "none", "nan", "n/a", "undefined", "[]", "{}"})


def esc(value: Any) -> str:
    """HTML-escaped text."""
    return html.escape(str(value), quote=True)


def is_placeholder(text: str) -> bool:
    """Whether a field holds a "no value" placeholder (``null``, ``None``, ``nan``...) instead of text."""
    return text.strip().lower() in PLACEHOLDERS


def field_text(sample: Sample, field: str) -> str:
    """A sample's text field as the model saw it (comments one per line), placeholders as empty."""
    if field == "comments":
        return "\n".join(c for c in sample.comments if not is_placeholder(c))
    text = str(getattr(sample, field))
    return "" if is_placeholder(text) else text


def ago(when: datetime | None, now: datetime | None = None) -> str:
    """'5 min ago' style age of a UTC time."""
    if when is None:
        return ""
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when
    seconds = max(0, int(((now or datetime.now(UTC)) - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return "just now"


# --------------------------------------------------------------------------- media


@dataclass(frozen=True)
class FrameCell:
    """One frame of the strip: where it sits, its caption, and its inline image (None: not servable)."""

    position: int
    label: str
    url: str | None
    cited: bool = False
    matched: bool = False


def media_html(
    video_url: str | None, video_note: str, frames: Sequence[FrameCell], *, blurred: bool, blur_reason: str = ""
) -> str:
    """The video player and the frame strip. When ``blurred``, every view of the media is blurred and grey:
    the player (its poster and playback), each frame, and the zoomed frame."""
    blur = BLUR_STYLE if blurred else ""
    parts = []
    if blurred:
        parts.append(
            f'<div class="km-blur-note" style="background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;'
            f'padding:6px 10px;margin-bottom:6px">Media blurred and grey: {esc(blur_reason)}. '
            "Press <strong>Reveal media</strong> (key V) to see it; the reveal is logged.</div>"
        )
    if video_url is not None:
        parts.append(
            f'<video class="km-player" controls preload="metadata" playsinline src="{esc(video_url)}" '
            f'style="width:100%;max-height:340px;background:#000;border-radius:6px;{blur}"></video>'
        )
    elif video_note:
        parts.append(f'<p class="km-video-note" style="color:#57606a;margin:4px 0"><em>{esc(video_note)}</em></p>')
    if not frames:
        parts.append('<p style="color:#57606a;margin:4px 0"><em>No frames were recorded for this sample.</em></p>')
    cells = []
    for f in frames:
        border = "3px solid #cf222e" if f.cited else ("3px solid #0969da" if f.matched else "1px solid #d0d7de")
        badges = (" <strong>cited</strong>" if f.cited else "") + (" <strong>matched</strong>" if f.matched else "")
        if f.url is None:
            body = (
                f'<div style="width:{FRAME_WIDTH}px;height:135px;display:flex;align-items:center;'
                'justify-content:center;background:#f6f8fa;color:#57606a;font-size:12px">not under a media root</div>'
            )
        else:
            body = (
                f'<img class="km-zoomable" alt="{esc(f.label)}" title="click to enlarge" src="{f.url}" '
                f'style="width:{FRAME_WIDTH}px;height:auto;display:block;cursor:zoom-in;{blur}">'
            )
        classes = "km-frame" + (" km-cited" if f.cited else "") + (" km-matched" if f.matched else "")
        cells.append(
            f'<figure class="{classes}" data-position="{f.position}" '
            f'style="margin:0;padding:4px;border:{border};border-radius:6px;overflow:hidden">'
            f'{body}<figcaption style="font-size:12px;margin-top:4px">{esc(f.label)}{badges}</figcaption></figure>'
        )
    if cells:
        parts.append('<div class="km-strip" style="display:flex;gap:8px;flex-wrap:wrap;margin-top:6px">')
        parts.append("".join(cells) + "</div>")
    return f'<div class="km-media" data-blurred="{"1" if blurred else "0"}">' + "".join(parts) + "</div>"


# --------------------------------------------------------------------------- text and evidence


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
    """Title, OCR, ASR and comments with the quotes the verdict cites highlighted (empty fields say so)."""
    parts = []
    for field, label in TEXT_FIELDS:
        text = field_text(sample, field)
        spans = [s for s in verdict.evidence.text if s.field == field] if text == field_text_raw(sample, field) else []
        body = highlight(text, spans) if text else '<em style="color:#57606a">(empty)</em>'
        parts.append(
            f'<div class="km-field" data-field="{field}" style="margin-bottom:8px"><strong>{label}</strong>'
            f'<div style="white-space:pre-wrap;max-height:160px;overflow:auto">{body}</div></div>'
        )
    return "".join(parts)


def field_text_raw(sample: Sample, field: str) -> str:
    """The field exactly as stored (the offsets of cited spans refer to it)."""
    return "\n".join(sample.comments) if field == "comments" else str(getattr(sample, field))


def evidence_html(verdict: Verdict, policy: Policy) -> str:
    """What the verdict rests on besides the highlighted quotes and outlined frames: labelled cases the
    router or the model leaned on, known-content matches with their frame pairs, text reported as trying
    to instruct the judge, and quotes that are not in the text."""
    ev = verdict.evidence
    parts = []
    quotes = [s for s in ev.text if s.grounded]
    if quotes:
        items = "".join(f"<li>{esc(s.field)}: “{esc(s.quote)}”</li>" for s in quotes)
        parts.append(f"<p><strong>Cited quotes</strong> (highlighted in the text)</p><ul>{items}</ul>")
    loose = [s for s in ev.text if not s.grounded]
    if loose:
        items = "".join(f"<li>{esc(s.field)}: “{esc(s.quote)}”</li>" for s in loose)
        parts.append(f'<p style="color:#cf222e"><strong>Quotes not found in the text</strong> '
                     f"(may be hallucinated)</p><ul>{items}</ul>")  # fmt: skip
    if ev.cases:
        rows = "".join(
            f"<tr><td>{esc(c.id)}</td><td>{esc(_category_label(c.category, policy))}</td>"
            f"<td style='text-align:right'>{'' if c.similarity is None else f'{c.similarity:.2f}'}</td>"
            f"<td>{esc(c.source)}</td></tr>"
            for c in ev.cases
        )
        parts.append(
            "<p><strong>Nearest labelled cases</strong></p><table class='km-evidence-cases'>"
            "<tr><th>case</th><th>label</th><th>similarity</th><th>source</th></tr>" + rows + "</table>"
        )
    for m in ev.matches:
        pairs = ", ".join(
            f"{_secs(p.query_timestamp)} ↔ {_secs(p.bank_timestamp)}"
            + (f" (distance {p.distance})" if p.distance is not None else "")
            for p in m.pairs
        )
        decision = f" / {esc(m.decision)}" if m.decision else ""
        parts.append(
            f'<p class="km-match"><strong>Known-content match</strong>: bank entry {esc(m.entry_id)} — '
            f"{esc(_category_label(m.category, policy))}{decision}, {m.similarity:.0%} of frames matched"
            + (f"<br><span style='font-size:13px'>this video ↔ bank video: {esc(pairs)}</span>" if pairs else "")
            + "</p>"
        )
    if verdict.reported_instructions:
        items = "".join(f"<li>“{esc(t)}”</li>" for t in verdict.reported_instructions)
        parts.append(f"<p><strong>Text that tries to instruct the judge</strong></p><ul>{items}</ul>")
    return "".join(parts) or "<p><em>No cited quotes, labelled cases or matches recorded.</em></p>"


def _secs(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}s"


def _category_label(code: str | None, policy: Policy) -> str:
    if not code:
        return "no category"
    cat = policy.find(code)
    return f"{cat.code} · {cat.tag}" if cat is not None else code


def reasoning_text(verdict: Verdict) -> str:
    """What the reviewer reads as the verdict's reasoning (a router or a match writes none: say so)."""
    if verdict.rationale.strip():
        return verdict.rationale.strip()
    if verdict.stage is Stage.ROUTER:
        return (
            f"Decided by the first-stage text router, which writes no reasoning ({verdict.summary or 'no score'}). "
            "The quotes and nearest labelled cases it leaned on are listed under Evidence."
        )
    if verdict.stage is Stage.MATCH:
        return "Matched known content in the hash bank; the matched frames are listed under Evidence."
    if verdict.raw_output.strip():
        return verdict.raw_output.strip()
    if verdict.error:
        return f"No answer: {verdict.error}"
    return "The model wrote no reasoning."


# --------------------------------------------------------------------------- why it is here


@dataclass(frozen=True)
class Reports:
    """User reports of one sample: how many, how many since the last human decision, and why."""

    total: int
    open: int
    reasons: tuple[tuple[str, int], ...]  # (reason, count), most frequent first
    last: datetime | None


def why_reasons(verdict: Verdict, reports: Reports, low_confidence: float, confidence: float | None) -> list[str]:
    """Why this item needs a person, in the reviewer's words, most important first."""
    lines: list[str] = []
    known = {f for f in (parse(x) for x in verdict.flags) if f is not None}
    for flag in Flag:  # declaration order is the order of importance
        if flag in known and flag not in (Flag.AUTO_ALLOW, Flag.AUTO_FLAG):
            lines.append(REVIEW_TEXT[flag])
    details = [x for x in verdict.flags if parse(x) is None]
    if details:
        lines.append("details: " + ", ".join(details))
    if (
        confidence is not None
        and confidence < low_confidence
        and not known & {Flag.LOW_CONFIDENCE, Flag.LOW_CALIBRATED_CONFIDENCE}
    ):
        lines.append(f"confidence {confidence:.2f} is below the review threshold {low_confidence:.2f}")  # fmt: skip
    if verdict.reported_instructions:
        lines.append(f"the model reports {len(verdict.reported_instructions)} passage(s) trying to instruct it")
    if verdict.evidence.matches:
        n = len(verdict.evidence.matches)
        lines.append(f"matches known content ({n} bank entr{'y' if n == 1 else 'ies'})")
    if reports.open:
        lines.append(f"reported by users {reports.open}x since the last human decision")
    if not lines and str(verdict.decision) == "review":
        lines.append("the policy sends this category to a person")
    return lines


def why_html(lines: Sequence[str], *, queued: bool) -> str:
    """The "why it is here" banner."""
    if not queued:
        lines = ["not in the review queue (opened by search)", *lines]
    if not lines:
        lines = ["no open reason: the verdict was confident and nobody reported it"]
    items = "".join(f"<li>{esc(line)}</li>" for line in lines)
    return (
        '<div class="km-why" style="background:#ddf4ff;border-left:4px solid #0969da;border-radius:6px;'
        'padding:3px 10px;font-size:14px"><strong>Why it is here</strong>'
        f'<ul style="margin:1px 0 1px 18px;padding:0">{items}</ul></div>'
    )


def reports_html(reports: Reports) -> str:
    """User reports: the count, how many are open, and their reasons with counts (nothing when none)."""
    if not reports.total:
        return ""
    reasons = ", ".join(f"{esc(r or '(no reason given)')} ×{n}" for r, n in reports.reasons)
    return (
        f'<div class="km-reports" style="font-size:13px;border-left:4px solid #9a6700;padding:2px 8px;'
        f'background:#fff8c5;border-radius:6px"><strong>{reports.total} user '
        f"report{'s' if reports.total != 1 else ''}</strong> ({reports.open} since the last human decision, "
        f"latest {esc(ago(reports.last))}): {reasons}</div>"
    )


# --------------------------------------------------------------------------- verdict, provenance, precedents


def verdict_html(verdict: Verdict, policy: Policy, confidence: float | None) -> str:
    """Decision badge, category with its policy action and severity, confidence and stage."""
    colour = DECISION_COLOURS.get(str(verdict.decision), "#57606a")
    cat = policy.find(verdict.category) if verdict.category else None
    category = f"{esc(cat.code)} · {esc(cat.tag)} · {esc(cat.name)}" if cat else esc(verdict.category or "none")
    rows = [("model category", category)]
    if verdict.other_categories:
        rows.append(("also", esc(", ".join(verdict.other_categories))))
    if cat is not None:
        rows.append(("policy", f"{esc(cat.action)} · severity {esc(cat.severity)}"))
    conf = "n/a" if confidence is None else f"{confidence:.2f}"
    rows.append(("confidence · stage", f"{conf} · {esc(verdict.stage)} ({esc(verdict.status)})"))
    if verdict.summary:
        rows.append(("summary", esc(verdict.summary)))
    if verdict.error:
        rows.append(("error", esc(verdict.error)))
    # A two-column grid, not a table: compact, and untouched by the page's table styles.
    grid = "".join(
        f'<div style="color:#57606a;white-space:nowrap">{k}</div><div style="min-width:0">{v}</div>' for k, v in rows
    )
    badge = (
        f'<span class="km-decision" style="background:{colour};color:white;padding:0 10px;border-radius:12px;'
        f'font-weight:600">{esc(verdict.decision)}</span>'
    )
    return (
        f'<div class="km-verdict">Model verdict {badge}<div style="display:grid;grid-template-columns:auto 1fr;'
        f'gap:1px 10px;margin-top:3px;font-size:13px;line-height:18px">{grid}</div></div>'
    )


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


def header_html(sample_id: str, title: str, position: str, claim: str = "") -> str:
    """The item's id and title (truncated, full text in the tooltip), where it sits in the queue, its claim."""
    shown = title if len(title) <= 60 else title[:59] + "…"
    return (
        f'<div class="km-head"><span class="km-head-id">{esc(sample_id)}</span>'
        f'<span class="km-head-pos">{esc(position)}</span>'
        f'<div class="km-head-title" title="{esc(title)}">{esc(shown) or "<em>(no title)</em>"}</div>'
        + (f'<div class="km-claim">{esc(claim)}</div>' if claim else "")
        + "</div>"
    )


# --------------------------------------------------------------------------- the queue table

QUEUE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("#", "38px"), ("sample", "100px"), ("title", "auto"), ("decision", "74px"), ("category", "128px"),
    ("conf", "50px"), ("severity", "74px"), ("rep.", "44px"), ("why", "150px"), ("policy", "60px"),
)  # fmt: skip


def queue_html(page: QueuePage, current: str, me: str = "") -> str:
    """The queue page as a table with fixed columns: long text is cut with an ellipsis, whole in the tooltip.

    Items another reviewer holds are marked (and J/K pass them by); ``me`` is the viewing reviewer.
    """
    cols = "".join(f'<col style="width:{w}">' for _, w in QUEUE_COLUMNS)
    head = "".join(f"<th>{esc(name)}</th>" for name, _ in QUEUE_COLUMNS)
    body = []
    for n, row in enumerate(page.rows, start=page.offset + 1):
        conf = "" if row.confidence is None else f"{row.confidence:.2f}"
        other = row.claimed_by is not None and row.claimed_by != me
        until = f" until {row.claimed_until:%H:%M} UTC" if row.claimed_until else ""
        claim = f"claimed by {row.claimed_by}{until}" if other else ""
        cells = [
            (str(n), ""),
            # Plain text, not a lock emoji: reviewers' machines may have no emoji font.
            (
                (f"[{row.claimed_by}] " if other else "") + row.sample_id,
                f"{row.sample_id} · {claim}" if claim else row.sample_id,
            ),
            (row.title, row.title),
            (row.decision, ""),
            (row.category, row.category),
            (conf, ""),
            (row.severity, ""),
            (str(row.reports), ""),
            (row.why, row.why_long),
            (row.policy_version, row.policy_version),
        ]
        tds = "".join(f'<td title="{esc(tip)}">{esc(text)}</td>' if tip else f"<td>{esc(text)}</td>"
                      for text, tip in cells)  # fmt: skip
        classes = "km-row" + (" km-current" if row.sample_id == current else "") + (" km-claimed" if other else "")
        body.append(f'<tr class="{classes}" data-id="{esc(row.sample_id)}" tabindex="-1">{tds}</tr>')
    if not body:
        body.append(f'<tr><td colspan="{len(QUEUE_COLUMNS)}"><em>Nothing awaits review.</em></td></tr>')
    return (
        f'<div class="km-qwrap"><table class="km-q"><colgroup>{cols}</colgroup><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )
