"""Verdict flags: one enum for every stage, with the sentence a reviewer reads beside each flag.

A verdict's ``flags`` say why it is what it is ("why is this in my queue?"). Stages set them, the
review queue and item view explain them, reports count them. Keeping the names and their
explanations here means a new flag is added once and shows up everywhere with its text.

Flags are stored as plain strings (``Flag`` is a ``StrEnum``, so ``Flag.ESCALATED == "escalated"``);
a *detail* flag adds what exactly triggered it after a colon, e.g. ``injection:override@title``.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Flag(StrEnum):
    """Why a verdict looks the way it does. The order is the order of importance for a reviewer."""

    INJECTION_SUSPECTED = "injection_suspected"
    ERROR = "error"
    TRUNCATED_ANSWER = "truncated_answer"
    UNPARSED = "unparsed"
    UNKNOWN_CATEGORY = "unknown_category"
    INCONSISTENT_CATEGORIES = "inconsistent_categories"
    LOW_CALIBRATED_CONFIDENCE = "low_calibrated_confidence"
    LOW_CONFIDENCE = "low_confidence"
    REPAIRED_JSON = "repaired_json"
    UNCONFIRMED_MENTION = "unconfirmed_mention"
    UNCONFIRMED_BENIGN = "unconfirmed_benign"
    FLEXIBLE_PARSE = "flexible_parse"
    KNOWN_CONTENT_REVIEW = "known_content_review"
    KNOWN_CONTENT = "known_content"
    NO_VLM = "no_vlm"
    ESCALATED = "escalated"
    AUTO_ALLOW = "auto_allow"
    AUTO_FLAG = "auto_flag"


# What a reviewer reads for each flag: short enough for a queue cell, exact enough to act on.
REVIEW_TEXT: dict[Flag, str] = {
    Flag.INJECTION_SUSPECTED: "injection suspected: the video's text tries to instruct the judge",
    Flag.ERROR: "error: the video or the model call failed",
    Flag.TRUNCATED_ANSWER: "cut off: the answer hit the token limit before it was finished",
    Flag.UNPARSED: "unparsed: the model's answer could not be read",
    Flag.UNKNOWN_CATEGORY: "unknown category: the answer names no category of the policy",
    Flag.INCONSISTENT_CATEGORIES: "inconsistent answer: benign and a violation at once",
    Flag.LOW_CALIBRATED_CONFIDENCE: "low confidence (calibrated) below the policy's minimum",
    Flag.LOW_CONFIDENCE: "low confidence below the policy's minimum",
    Flag.REPAIRED_JSON: "malformed JSON verdict, repaired to read it: never allows on its own",
    Flag.UNCONFIRMED_MENTION: "loose answer: a category was mentioned, not stated as the label",
    Flag.UNCONFIRMED_BENIGN: "loose answer: benign recovered from free text",
    Flag.FLEXIBLE_PARSE: "answer recovered from free text, not the requested JSON",
    Flag.KNOWN_CONTENT_REVIEW: "re-upload of a banked video whose category may not be decided by a match alone",
    Flag.KNOWN_CONTENT: "re-upload of a banked video: decided by the hash match, no model call",
    Flag.NO_VLM: "escalated by the first stage, and no VLM is configured",
    Flag.ESCALATED: "escalated: the first stage was not sure",
    Flag.AUTO_ALLOW: "allowed by the first stage",
    Flag.AUTO_FLAG: "flagged by the first stage",
}

# Short labels for the queue's "why" column (the long text is the cell's tooltip).
SHORT_TEXT: dict[Flag, str] = {
    Flag.INJECTION_SUSPECTED: "injection suspected",
    Flag.ERROR: "error",
    Flag.TRUNCATED_ANSWER: "cut off",
    Flag.UNPARSED: "unparsed",
    Flag.UNKNOWN_CATEGORY: "unknown category",
    Flag.INCONSISTENT_CATEGORIES: "inconsistent answer",
    Flag.LOW_CALIBRATED_CONFIDENCE: "low confidence",
    Flag.LOW_CONFIDENCE: "low confidence",
    Flag.REPAIRED_JSON: "repaired answer",
    Flag.UNCONFIRMED_MENTION: "loose answer",
    Flag.UNCONFIRMED_BENIGN: "loose answer",
    Flag.FLEXIBLE_PARSE: "loose answer",
    Flag.KNOWN_CONTENT_REVIEW: "known content",
    Flag.KNOWN_CONTENT: "known content",
    Flag.NO_VLM: "escalated",
    Flag.ESCALATED: "escalated",
    Flag.AUTO_ALLOW: "auto allow",
    Flag.AUTO_FLAG: "auto flag",
}


def detail(flag: Flag | str, what: str) -> str:
    """A detail flag: ``prefix:what``, e.g. ``detail("injection", "override@title")``."""
    return f"{flag}:{what}"


def parse(raw: str) -> Flag | None:
    """The Flag a stored flag string names (None for a detail flag or one this version does not know)."""
    try:
        return Flag(raw)
    except ValueError:
        return None


def main_reason(flags: Iterable[str]) -> Flag | None:
    """The most important known flag among ``flags`` (declaration order of :class:`Flag`)."""
    known = {f for f in (parse(x) for x in flags) if f is not None}
    return next((f for f in Flag if f in known), None)


__all__ = ["REVIEW_TEXT", "SHORT_TEXT", "Flag", "detail", "main_reason", "parse"]
