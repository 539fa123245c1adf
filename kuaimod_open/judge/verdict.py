"""Verdict: parse a model's answer into a structured, reproducible moderation decision.

Model output is untrusted text. Parsing is tiered and never raises:

1. ``ok`` – the last fenced ```json block (or the last bare JSON object) whose ``category`` is a
   policy code or tag;
   ``repaired`` – the same, but the JSON was slightly broken (typographic quotes as delimiters, an
   unescaped quote or a raw newline inside a string, a trailing comma) and was read through
   ``json_repair``; such a verdict never allows on its own (flag ``repaired_json``);
2. ``flexible`` – no usable JSON, but a label line (``类别：色情低俗``, ``Category: HATE``) or exactly
   one category named in the text;
3. ``unparsed`` – nothing usable. Decision = review.

Only a well-formed (``ok``) answer can allow a video: unparsed, flexible-benign, low-confidence
and failed answers all go to human review. The decision itself comes from the *policy*: the
model names categories, the policy says what each category does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import json_repair
from pydantic import BaseModel, ConfigDict, Field

from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.flags import Flag
from kuaimod_open.judge.policy import Category, Decision, Policy


class ParseStatus(StrEnum):
    """How the verdict was obtained from the model's text."""

    OK = "ok"
    REPAIRED = "repaired"  # a JSON verdict that needed repair to be read; never allows on its own
    FLEXIBLE = "flexible"
    UNPARSED = "unparsed"
    ERROR = "error"  # the model (or the input) failed; there was no answer to parse


class Stage(StrEnum):
    """Which part of the system made the decision."""

    VLM = "vlm"
    ROUTER = "router"
    HUMAN = "human"
    MATCH = "match"  # a known-content match against the hash bank, before any model
    PIPELINE = "pipeline"  # the pipeline itself, e.g. an input that could not be read


class FrameRef(BaseModel):
    """A frame the model cited, by its 1-based position in the prompt."""

    position: int
    timestamp: float | None = None


class TextSpan(BaseModel):
    """A quote the model cited. ``start``/``end`` locate it in the sample's field when found verbatim."""

    field: str
    quote: str
    start: int | None = None
    end: int | None = None

    @property
    def grounded(self) -> bool:
        """Whether the quote really occurs in the field (ungrounded quotes may be hallucinated)."""
        return self.start is not None


class CaseRef(BaseModel):
    """A labelled case a decision leaned on: a nearest training row of the router, or a precedent."""

    id: str
    category: str | None = Field(default=None, description="Policy code of the case's label")
    similarity: float | None = Field(default=None, description="Cosine similarity to this sample, when known")
    source: str = Field(default="", description="Where the case comes from, e.g. 'router-train' or 'precedent'")


class FramePair(BaseModel):
    """One frame of this video matched to one frame of a known video (times in seconds)."""

    query_timestamp: float | None = None
    bank_timestamp: float | None = None
    distance: int | None = Field(default=None, description="Hamming distance of the two frame hashes")


class MatchRef(BaseModel):
    """A known-content match: the bank entry this video matched and the frames that matched."""

    entry_id: str
    category: str | None = None
    decision: Decision | None = Field(default=None, description="The decision recorded with the bank entry")
    similarity: float = Field(description="Share of frames matched (0-1)")
    pairs: list[FramePair] = Field(default_factory=list)


class Evidence(BaseModel):
    """What the verdict rests on: cited frames and quotes, labelled cases, known-content matches."""

    frames: list[FrameRef] = Field(default_factory=list)
    text: list[TextSpan] = Field(default_factory=list)
    cases: list[CaseRef] = Field(default_factory=list)
    matches: list[MatchRef] = Field(default_factory=list)


class Provenance(BaseModel):
    """Everything needed to reproduce a verdict."""

    model: str
    adapter: str | None = None
    policy_version: str
    policy_digest: str
    prompt_digest: str
    generate_digest: str | None = None
    calibration_digest: str | None = Field(default=None, description="sha256 prefix of the confidence calibration")
    frame_timestamps: list[float | None] = Field(default_factory=list)
    sample_key: str | None = Field(
        default=None, description="sha256 of the sample's id and content (kuaimod_open.ingest.keys.SampleKey.digest)"
    )
    content_digest: str | None = Field(
        default=None, description="sha256 of the judged content: the video's bytes, or text and frames"
    )
    package_version: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class Verdict(BaseModel):
    """One moderation decision about one sample. Serialised as one JSON line per sample."""

    model_config = ConfigDict(extra="forbid")

    sample_id: str
    decision: Decision
    category: str | None = Field(default=None, description="Policy code; None when unparsed/error")
    tag: str | None = Field(default=None, description="The category's data label, e.g. 色情低俗")
    other_categories: list[str] = Field(default_factory=list)
    confidence: float | None = None
    token_confidence: float | None = Field(
        default=None, description="The model's token probability of the category it wrote (needs logprobs)"
    )
    calibrated_confidence: float | None = Field(
        default=None,
        description="token_confidence through a fitted calibration: estimated probability the category is right",
    )
    evidence: Evidence = Field(default_factory=Evidence)
    summary: str = ""
    rationale: str = Field(default="", description="The model's reasoning, for reviewers")
    reported_instructions: list[str] = Field(
        default_factory=list,
        description="Text in the sample that tried to instruct the judge, as the model reported it (any: review)",
    )
    raw_output: str = ""
    status: ParseStatus
    stage: Stage = Stage.VLM
    flags: list[str] = Field(default_factory=list)
    precedents: list[str] = Field(default_factory=list, description="Ids of the precedents shown in the prompt")
    error: str | None = None
    latency_s: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    provenance: Provenance

    @property
    def needs_review(self) -> bool:
        """Whether a human must look at this sample."""
        return self.decision is Decision.REVIEW


# --------------------------------------------------------------------------- parsing

_FENCED = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)
_LABEL_LINE = re.compile(
    r"(?:category|label|tag|verdict|类别|标签|分类|类型|结论|判定|最终判定|违规类型)\s*[:：]\s*([^\n，,。；;]{1,40})",
    re.IGNORECASE,
)


def parse_verdict(text: str, policy: Policy, sample: Sample, provenance: Provenance) -> Verdict:
    """Turn raw model text into a :class:`Verdict`. Never raises; garbage becomes ``unparsed`` → review."""
    found = _last_json_verdict(text, policy)
    if found is not None:
        verdict = _from_json(found.obj, text, found.start, policy, sample, provenance)
        return _repaired(verdict, found) if found.repaired else verdict
    flexible, labelled = _flexible_category(text, policy)
    if flexible is not None:
        decision = flexible.action
        flags: list[str] = [Flag.FLEXIBLE_PARSE]
        if decision is Decision.ALLOW:
            decision = Decision.REVIEW  # only a well-formed answer may allow
            flags.append(Flag.UNCONFIRMED_BENIGN)
        elif not labelled:
            # A tag that merely occurs somewhere in free text (even in random tokens from a broken
            # model) is a hint, not a judgement: a person confirms it before anything is restricted.
            decision = Decision.REVIEW
            flags.append(Flag.UNCONFIRMED_MENTION)
        return Verdict(
            sample_id=sample.id,
            decision=decision,
            category=flexible.code,
            tag=flexible.tag,
            rationale=text.strip(),
            raw_output=text,
            status=ParseStatus.FLEXIBLE,
            flags=flags,
            provenance=provenance,
        )
    return Verdict(
        sample_id=sample.id,
        decision=Decision.REVIEW,
        rationale=text.strip(),
        raw_output=text,
        status=ParseStatus.UNPARSED,
        flags=[Flag.UNPARSED],
        provenance=provenance,
    )


def error_verdict(sample_id: str, message: str, provenance: Provenance, *, stage: Stage = Stage.VLM) -> Verdict:
    """A verdict for a sample whose input or model call failed: always decision = review."""
    return Verdict(
        sample_id=sample_id,
        decision=Decision.REVIEW,
        status=ParseStatus.ERROR,
        stage=stage,
        error=message,
        flags=[Flag.ERROR],
        provenance=provenance,
    )


@dataclass(frozen=True)
class _Found:
    """A JSON verdict located in the model's text."""

    obj: dict[str, Any]
    start: int
    chunk: str
    repaired: bool


def _last_json_verdict(text: str, policy: Policy) -> _Found | None:
    """The last JSON object in the text that names a known category (repaired if it must be), and where it starts."""
    fences = list(_FENCED.finditer(text))
    candidates: list[tuple[int, str]] = [(m.start(), m.group(1)) for m in fences]
    # A bare object inside a fence is the same answer; keep the fence so the rationale ends before it.
    candidates += [(at, obj) for at, obj in _bare_objects(text) if not any(f.start() <= at < f.end() for f in fences)]
    for start, chunk in sorted(candidates, key=lambda c: c[0], reverse=True):
        repaired = False
        try:
            obj = json.loads(chunk.strip())
        except (json.JSONDecodeError, RecursionError):
            obj, repaired = _repair(chunk), True
        if isinstance(obj, dict) and _category_of(obj, policy) is not None:
            return _Found(obj, start, chunk, repaired)
    return None


def _repair(chunk: str) -> Any:
    """``chunk`` read by ``json_repair`` (None when nothing object-like comes out)."""
    if "{" not in chunk:
        return None
    try:
        return json_repair.repair_json(chunk.strip(), return_objects=True)
    except (ValueError, RecursionError):  # the library promises not to raise; a bug there must not sink a batch
        return None


# A key naming the category (not "other_categories"), in ASCII or typographic quotes, before a colon.
_CATEGORY_KEY = re.compile(r"(?<![A-Za-z_])(?:category|tag|label)(?![A-Za-z_])[\s\"'“”‘’]*[:：]", re.IGNORECASE)


def _repaired(verdict: Verdict, found: _Found) -> Verdict:
    """Fail safe with a repaired answer: it never allows on its own, and acts only when it is unambiguous.

    The category the repair read must appear verbatim in the broken text, under exactly one category
    key: quotes gone wrong could otherwise let a quoted caption (attacker text) supply a second key.
    """
    flags = [*verdict.flags, Flag.REPAIRED_JSON]
    decision = verdict.decision
    keys = len(_CATEGORY_KEY.findall(found.chunk))
    verbatim = verdict.category is not None and (
        verdict.category in found.chunk or (verdict.tag is not None and verdict.tag in found.chunk)
    )
    if decision is Decision.ALLOW or keys != 1 or not verbatim:
        decision = Decision.REVIEW
    return verdict.model_copy(update={"status": ParseStatus.REPAIRED, "decision": decision, "flags": flags})


def _bare_objects(text: str) -> list[tuple[int, str]]:
    """Top-level ``{...}`` spans (brace-balanced, string-aware), for answers without a fence."""
    spans, depth, start, in_str, escaped = [], 0, -1, False, False
    for i, ch in enumerate(text):
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"' and depth > 0:
            in_str = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append((start, text[start : i + 1]))
    return spans


def _category_of(obj: dict[str, Any], policy: Policy) -> Category | None:
    for key in ("category", "tag", "label"):
        value = obj.get(key)
        if isinstance(value, str):
            found = policy.find(value)
            if found is not None:
                return found
    return None


def _from_json(
    obj: dict[str, Any], text: str, json_start: int, policy: Policy, sample: Sample, provenance: Provenance
) -> Verdict:
    primary = _category_of(obj, policy)
    assert primary is not None  # _last_json_verdict only returns objects with a category
    others: list[Category] = []
    raw_others = obj.get("other_categories") or []
    for value in raw_others if isinstance(raw_others, list) else []:
        found = policy.find(value) if isinstance(value, str) else None
        if found is not None and found.code not in {primary.code, *(o.code for o in others)}:
            others.append(found)
    flags: list[str] = []
    if primary.code == policy.benign and others:
        flags.append(Flag.INCONSISTENT_CATEGORIES)
    violating = [c for c in (primary, *others) if c.code != policy.benign]
    decision = max((c.action for c in violating), key=lambda d: d.rank, default=Decision.ALLOW)
    confidence = _confidence(obj.get("confidence"))
    if Flag.INCONSISTENT_CATEGORIES in flags:
        decision = Decision.REVIEW
    elif confidence is not None and confidence < policy.min_confidence and decision is not Decision.REVIEW:
        decision = Decision.REVIEW
        flags.append(Flag.LOW_CONFIDENCE)
    return Verdict(
        sample_id=sample.id,
        decision=decision,
        category=primary.code,
        tag=primary.tag,
        other_categories=[o.code for o in others],
        confidence=confidence,
        evidence=_evidence(obj.get("evidence"), sample),
        summary=str(obj.get("summary") or "")[:2000],
        rationale=text[: max(json_start, 0)].strip(),
        raw_output=text,
        status=ParseStatus.OK,
        flags=flags,
        provenance=provenance,
    )


def _confidence(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(str(value).strip().rstrip("%"))
    except ValueError:
        return None
    if 1.0 < number <= 100.0:  # "85" or "85%" means 0.85
        number /= 100.0
    return number if 0.0 <= number <= 1.0 else None


_FIELDS = {"title": "title", "ocr": "ocr", "asr": "asr", "comments": "comments"}


def _evidence(value: Any, sample: Sample) -> Evidence:
    if not isinstance(value, dict):
        return Evidence()
    frames = []
    raw_frames = value.get("frames")
    for ref in raw_frames if isinstance(raw_frames, list) else []:
        if isinstance(ref, int) and not isinstance(ref, bool) and 1 <= ref <= len(sample.frames):
            frames.append(FrameRef(position=ref, timestamp=sample.frames[ref - 1].timestamp))
    spans = []
    raw_text = value.get("text")
    for item in raw_text if isinstance(raw_text, list) else []:
        if not isinstance(item, dict):
            continue
        field = str(item.get("field", "")).strip().lower()
        quote = str(item.get("quote", "")).strip()
        if field not in _FIELDS or not quote:
            continue
        source = "\n".join(sample.comments) if field == "comments" else getattr(sample, field)
        at = source.find(quote)
        spans.append(
            TextSpan(
                field=field, quote=quote[:500], start=at if at >= 0 else None, end=at + len(quote) if at >= 0 else None
            )
        )
    return Evidence(frames=frames, text=spans)


def _flexible_category(text: str, policy: Policy) -> tuple[Category | None, bool]:
    """A category from a label line (``True``), else the single category the text names (``False``)."""
    for match in reversed(list(_LABEL_LINE.finditer(text))):
        value = match.group(1).strip().strip("\"'“”「」*` ")
        found = policy.find(value) or _single_mention(value, policy)
        if found is not None:
            return found, True
    return _single_mention(text, policy), False


def _single_mention(text: str, policy: Policy) -> Category | None:
    mentioned = {
        c.code
        for c in policy.categories
        if c.tag in text or re.search(rf"(?<![A-Za-z0-9_]){re.escape(c.code)}(?![A-Za-z0-9_])", text)
    }
    # A tag that contains another tag (none do in the default policy) must not count twice.
    return policy.category(mentioned.pop()) if len(mentioned) == 1 else None


__all__ = [
    "Evidence",
    "FrameRef",
    "ParseStatus",
    "Provenance",
    "Stage",
    "TextSpan",
    "Verdict",
    "error_verdict",
    "parse_verdict",
]
