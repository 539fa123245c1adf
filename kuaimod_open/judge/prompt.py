"""Prompt: render the policy and one Sample into chat messages through a strict template file.

The template (``prompts/moderation.md``) is a ``string.Template`` with ``$name`` placeholders. The
text before the line ``<!-- user -->`` is the system message, the rest the user message. Rendering
is strict: an unknown placeholder or a missing required one is a :class:`PromptError` raised when
the template is loaded, before any model is touched.

Title, OCR, ASR and comments are attacker-controlled. They are placed inside
``<untrusted field=...>`` fences, and anything in them that could close a fence or forge a chat
turn (``</untrusted>``, ``<|im_start|>``...) is neutralised first.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from kuaimod_open.errors import PromptError
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.policy import Policy

USER_MARKER = "<!-- user -->"
# Size bounds. The shipped template is 2.4 KB and a full prompt with clipped fields ~14k characters;
# the rendered policy alone is bounded by kuaimod_open.judge.policy.MAX_POLICY_PROMPT_CHARS.
MAX_TEMPLATE_BYTES = 256 << 10
MAX_PROMPT_CHARS = 200_000
FRAMES_PLACEHOLDER = "$frames"

# Placeholders a template may use. The frames placeholder is structural (images are interleaved
# with their labels there), so it is handled separately and must appear in the user part.
KNOWN_VARIABLES = frozenset(
    {
        "policy",
        "benign_code",
        "category_codes",
        "num_frames",
        "precedents",
        "title",
        "ocr",
        "asr",
        "comments",
        "frames",
    }
)
REQUIRED_VARIABLES = frozenset({"policy", "title", "ocr", "asr", "frames"})


@dataclass(frozen=True)
class ImagePart:
    """An image in a message, by path; the backend loads and encodes it."""

    path: Path


Part = str | ImagePart


@dataclass(frozen=True)
class Message:
    """One chat turn: text and images in order."""

    role: Literal["system", "user", "assistant"]
    parts: tuple[Part, ...]

    @property
    def text(self) -> str:
        """The text parts joined, images shown as ``<image>``."""
        return "".join(p if isinstance(p, str) else "<image>" for p in self.parts)

    @property
    def images(self) -> tuple[Path, ...]:
        """The image paths in order."""
        return tuple(p.path for p in self.parts if isinstance(p, ImagePart))


@dataclass(frozen=True)
class PromptLimits:
    """Character budgets per untrusted field.

    OCR on the benchmark runs to ~10k characters, mostly repeated subtitles; truncating keeps the
    prompt inside small models' context.
    """

    title: int = 500
    ocr: int = 2000
    asr: int = 1500
    comments: int = 1500


@dataclass(frozen=True)
class Template:
    """A loaded, validated moderation template."""

    system: str
    user: str
    source: str
    digest: str
    variables: frozenset[str] = field(default_factory=frozenset)


def load_template(path: str | Path | None = None) -> Template:
    """Read and validate a template file (default: the shipped ``prompts/moderation.md``)."""
    if path is None:
        from kuaimod_open.judge.resources import prompts_dir

        path = prompts_dir() / "moderation.md"
    path = Path(path)
    try:
        if path.exists() and not path.is_file():
            raise PromptError(f"Cannot read prompt template {path}: not a regular file")
        with path.open("rb") as handle:
            raw = handle.read(MAX_TEMPLATE_BYTES + 1)
        text = raw.decode("utf-8")
    except OSError as exc:
        raise PromptError(f"Cannot read prompt template {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise PromptError(f"Cannot read prompt template {path}: not UTF-8 text") from None
    return parse_template(text, source=str(path))


def parse_template(text: str, source: str = "<template>") -> Template:
    """Validate template text: known placeholders only, required ones present, one user marker, size bounded."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TEMPLATE_BYTES:
        raise PromptError(f"{source}: the template is over the {MAX_TEMPLATE_BYTES:,} byte limit")
    if text.count(USER_MARKER) != 1:
        raise PromptError(f"{source}: the template must contain the line '{USER_MARKER}' exactly once")
    system, user = (part.strip("\n") for part in text.split(USER_MARKER))
    used: set[str] = set()
    for part_name, part in (("system", system), ("user", user)):
        try:
            names = string.Template(part).get_identifiers()
        except ValueError as exc:
            raise PromptError(f"{source} ({part_name} part): {exc}; write a literal '$' as '$$'") from None
        if not string.Template(part).is_valid():
            raise PromptError(f"{source} ({part_name} part): invalid placeholder; write a literal '$' as '$$'")
        unknown = sorted(set(names) - KNOWN_VARIABLES)
        if unknown:
            raise PromptError(
                f"{source} ({part_name} part): unknown placeholder(s) {', '.join('$' + n for n in unknown)}; "
                f"known: {', '.join('$' + n for n in sorted(KNOWN_VARIABLES))}"
            )
        used.update(names)
    missing = sorted(REQUIRED_VARIABLES - used)
    if missing:
        raise PromptError(f"{source}: required placeholder(s) missing: {', '.join('$' + n for n in missing)}")
    if FRAMES_PLACEHOLDER not in user or user.count(FRAMES_PLACEHOLDER) != 1:
        raise PromptError(f"{source}: '$frames' must appear exactly once, in the user part")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return Template(system=system, user=user, source=source, digest=digest, variables=frozenset(used))


# --------------------------------------------------------------------------- untrusted text

# Anything that could end our fence or open a chat turn of its own once tokenised.
_FENCE = re.compile(r"<\s*/?\s*untrusted", re.IGNORECASE)
_SPECIAL_TOKEN = re.compile(r"<\|([^|<>]{0,40})\|>")


def neutralise(text: str) -> str:
    """Make untrusted text unable to close its fence or forge special tokens; keep it readable."""
    text = text.replace("\x00", "")
    text = _FENCE.sub(lambda m: m.group(0).replace("<", "‹"), text)
    # '<|im_start|>' would be parsed as a real special token by Qwen tokenizers.
    return _SPECIAL_TOKEN.sub(lambda m: f"‹{m.group(1)}›", text)


def _clip(text: str, limit: int) -> str:
    text = neutralise(text.strip())
    if len(text) <= limit:
        return text or "(empty)"
    return f"{text[:limit]} [... {len(text) - limit} more characters not shown]"


# --------------------------------------------------------------------------- rendering


def build_messages(
    sample: Sample,
    policy: Policy,
    template: Template,
    *,
    precedents: str = "",
    limits: PromptLimits | None = None,
) -> tuple[Message, ...]:
    """Render the system and user messages for one sample; frames become interleaved images."""
    limits = limits or PromptLimits()
    values = {
        "policy": policy.render(),
        "benign_code": policy.benign,
        "category_codes": ", ".join(policy.codes()),
        "num_frames": str(len(sample.frames)),
        "precedents": precedents.strip() or "(none)",
        "title": _clip(sample.title, limits.title),
        "ocr": _clip(sample.ocr, limits.ocr),
        "asr": _clip(sample.asr, limits.asr),
        "comments": _clip("\n".join(f"- {c}" for c in sample.comments), limits.comments),
    }
    system = string.Template(template.system).substitute(values)
    before, after = template.user.split(FRAMES_PLACEHOLDER)
    parts: list[Part] = [string.Template(before).substitute(values)]
    if not sample.frames:
        parts.append("(no frames available: judge from the text alone)")
    for position, frame in enumerate(sample.frames, start=1):
        parts += [f"{frame.label(position)}: ", ImagePart(frame.path), "\n"]
    parts.append(string.Template(after).substitute(values))
    messages = (Message("system", (system,)), Message("user", tuple(_merge_text(parts))))
    size = sum(len(m.text) for m in messages)
    if size > MAX_PROMPT_CHARS:
        # Untrusted fields are clipped; what is left is the template, the policy and the precedents.
        raise PromptError(
            f"the prompt for {sample.id!r} is {size:,} characters; the limit is {MAX_PROMPT_CHARS:,} "
            "(shorten the policy, the template or the precedents)"
        )
    return messages


def _merge_text(parts: Sequence[Part]) -> list[Part]:
    merged: list[Part] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        elif part != "":
            merged.append(part)
    return merged


def messages_digest(messages: Sequence[Message]) -> str:
    """Content digest of rendered messages (text + image paths): the cache key of a request."""
    h = hashlib.sha256()
    for m in messages:
        h.update(m.role.encode())
        for p in m.parts:
            h.update(p.encode("utf-8") if isinstance(p, str) else f"<image:{p.path}>".encode())
    return h.hexdigest()[:16]


__all__ = [
    "ImagePart",
    "Message",
    "PromptLimits",
    "Template",
    "build_messages",
    "load_template",
    "messages_digest",
    "neutralise",
    "parse_template",
]
