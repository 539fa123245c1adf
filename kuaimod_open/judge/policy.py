"""The moderation policy: an editable YAML file of categories, definitions, examples and actions.

The policy is the single source of truth for what the model is asked to judge and for what each
category *does* (the action). Users change moderation behaviour by editing ``prompts/policy.yaml``;
adding a category needs no code change. Loading validates the file strictly and reports errors
with the file name, the line and the field, before any model is loaded.

Shape of the file (abridged)::

    version: "1.0.0"
    name: KuaiMod default policy
    benign: BENIGN
    min_confidence: 0.5
    groups:
      - {code: LAW, tag: 法律与社会安全, name: Law & social safety}
    categories:
      - code: BENIGN
        tag: 正向
        name: Benign
        definition: ...
        action: allow
        severity: none
      - code: ILLEGAL
        tag: 违法犯罪
        group: LAW
        ...
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kuaimod_open.errors import PolicyError

CODE_PATTERN = r"^[A-Z][A-Z0-9_]{1,31}$"


class Decision(StrEnum):
    """What happens to a video. Ordered from most permissive to most restrictive."""

    ALLOW = "allow"
    RESTRICT = "restrict"  # stays up, distribution limited (not recommended, age-gated...)
    REVIEW = "review"  # a human decides
    BLOCK = "block"  # taken down

    @property
    def rank(self) -> int:
        """Strictness rank: a higher rank wins when several categories apply."""
        return _DECISION_RANK[self]


# review outranks restrict: when one category asks for a human and another only for limited
# distribution, the human must see it; block outranks everything.
_DECISION_RANK = {Decision.ALLOW: 0, Decision.RESTRICT: 1, Decision.REVIEW: 2, Decision.BLOCK: 3}


class Severity(StrEnum):
    """How harmful a category is; drives review-queue priority and reviewer wellness blurring."""

    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Group(_Strict):
    """A primary group of violation categories (KuaiMod has four)."""

    code: str = Field(pattern=CODE_PATTERN)
    tag: str = Field(min_length=1, description="Display label, e.g. 法律与社会安全")
    name: str = Field(min_length=1, description="English name")


class Category(_Strict):
    """One policy category. ``code`` is stable ASCII and must never be renamed once published."""

    code: str = Field(pattern=CODE_PATTERN)
    tag: str = Field(min_length=1, description="Exact label used in data, e.g. 违法犯罪")
    name: str = Field(min_length=1, description="English name")
    group: str | None = None
    definition: str = Field(min_length=1)
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    action: Decision
    severity: Severity


class MatchPolicy(_Strict):
    """What a known-content match (the PDQ hash bank, :mod:`kuaimod_open.first_stage.match`) may do.

    A video matches a bank entry when at least ``min_query_fraction`` of its frames (and
    ``min_bank_fraction`` of the entry's frames) have a frame on the other side within
    ``max_distance`` bits, counting at least ``min_frames`` matched frames. A match in a category
    listed in ``act_alone`` takes the entry's decision at once, with no model call; any other match
    goes to a human with the match as evidence. Defaults come from eval/hash_robustness.md.
    """

    act_alone: tuple[str, ...] = Field(default=(), description="Category codes a match may decide alone")
    max_distance: int = Field(default=31, ge=0, le=128, description="Largest Hamming distance of two matching frames")
    min_query_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    min_bank_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    min_frames: int = Field(default=2, ge=1, description="Fewest matched frames for a match")
    auto_bank: bool = Field(default=True, description="A reviewer's block/restrict adds the video to the bank")
    no_auto_bank: tuple[str, ...] = Field(default=(), description="Categories never banked automatically")


class Policy(_Strict):
    """A validated moderation policy. Build it with :func:`load_policy` or :func:`parse_policy`."""

    version: str = Field(min_length=1)
    name: str = Field(min_length=1)
    description: str = ""
    benign: str = Field(pattern=CODE_PATTERN, description="Code of the allowed class")
    min_confidence: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Verdicts whose confidence is below this go to review"
    )
    guidance: str = Field(default="", description="Rules for ambiguous cases, rendered verbatim")
    groups: tuple[Group, ...] = ()
    categories: tuple[Category, ...] = Field(min_length=2)
    match: MatchPolicy | None = Field(
        default=None, description="Known-content matching (hash bank); absent: matches go to review"
    )

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_text(cls, value: Any) -> Any:
        # YAML reads `version: 1.0` as a float; accept numbers but keep them as text.
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _check_references(self) -> Policy:
        group_codes = [g.code for g in self.groups]
        _no_duplicates("groups", "code", group_codes)
        _no_duplicates("categories", "code", [c.code for c in self.categories])
        _no_duplicates("categories", "tag", [c.tag for c in self.categories])
        codes = {c.code for c in self.categories}
        if self.benign not in codes:
            raise ValueError(
                f"benign: the benign class '{self.benign}' is not one of the categories; "
                "add a category with that code (action: allow) or fix 'benign'"
            )
        for i, cat in enumerate(self.categories):
            where = f"categories[{i}] ({cat.code})"
            if cat.code == self.benign:
                if cat.action is not Decision.ALLOW:
                    raise ValueError(f"{where}: the benign class must have action 'allow', not '{cat.action}'")
                continue
            if cat.action is Decision.ALLOW:
                raise ValueError(
                    f"{where}: only the benign class may have action 'allow'; "
                    "use 'restrict' or 'review' for lenient handling of a violation"
                )
            if cat.group is not None and cat.group not in group_codes:
                raise ValueError(
                    f"{where}: group '{cat.group}' is not defined under 'groups' "
                    f"(defined: {', '.join(group_codes) or 'none'})"
                )
        if self.match is not None:
            for key in ("act_alone", "no_auto_bank"):
                for code in getattr(self.match, key):
                    if code not in codes or code == self.benign:
                        raise ValueError(
                            f"match.{key}: '{code}' is not a violation category of this policy "
                            f"(known: {', '.join(c.code for c in self.violations)})"
                        )
        return self

    @property
    def matching(self) -> MatchPolicy:
        """The match section, or its defaults (no category acts alone) when the file has none."""
        return self.match or MatchPolicy()

    @property
    def digest(self) -> str:
        """Content digest (sha256 of the canonical JSON, 16 hex chars): changes with any edit."""
        # A policy without a match section keeps the digest it had before the section existed.
        dumped = self.model_dump(mode="json", exclude={"match"} if self.match is None else None)
        canonical = json.dumps(dumped, ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

    @property
    def benign_category(self) -> Category:
        """The allowed class."""
        return self.category(self.benign)

    @property
    def violations(self) -> tuple[Category, ...]:
        """All categories except the benign class, in file order."""
        return tuple(c for c in self.categories if c.code != self.benign)

    def category(self, code: str) -> Category:
        """The category with this code; raises :class:`KeyError` naming the known codes."""
        for cat in self.categories:
            if cat.code == code:
                return cat
        raise KeyError(f"unknown category code '{code}' (known: {', '.join(self.codes())})")

    def codes(self) -> list[str]:
        """Category codes in file order."""
        return [c.code for c in self.categories]

    def find(self, label: str) -> Category | None:
        """Resolve a code, a tag or an English name (case-insensitive for ASCII) to a category."""
        wanted = label.strip()
        lowered = wanted.lower()
        for cat in self.categories:
            if wanted in (cat.code, cat.tag) or lowered in (cat.code.lower(), cat.name.lower()):
                return cat
        return None

    def by_tag(self, tag: str) -> Category:
        """The category whose data label is ``tag``; a clear :class:`PolicyError` when unknown."""
        for cat in self.categories:
            if cat.tag == tag:
                return cat
        raise PolicyError(
            f"The label '{tag}' is not a tag of policy '{self.name}' v{self.version}. "
            f"Known tags: {', '.join(c.tag for c in self.categories)}. "
            "Add a category with this tag to the policy file, or fix the data."
        )

    def group_of(self, code: str) -> Group | None:
        """The primary group of a category, if it has one."""
        cat = self.category(code)
        return next((g for g in self.groups if g.code == cat.group), None)

    def render(self) -> str:
        """The policy as text for the prompt: categories by group with definitions and examples."""
        lines = [f"Policy: {self.name} (version {self.version})"]
        if self.description:
            lines.append(self.description)
        benign = self.benign_category
        lines += ["", f"[{benign.code}] {benign.tag} / {benign.name} -> action: {benign.action}"]
        lines += _render_details(benign)
        for group, cats in self._grouped():
            lines += ["", f"## {group.tag} / {group.name}" if group else "## Other"]
            for cat in cats:
                lines.append(f"[{cat.code}] {cat.tag} / {cat.name} -> action: {cat.action}, severity: {cat.severity}")
                lines += _render_details(cat)
        if self.guidance:
            lines += ["", "Rules for ambiguous cases:", self.guidance]
        return "\n".join(lines)

    def _grouped(self) -> Iterator[tuple[Group | None, list[Category]]]:
        for group in self.groups:
            cats = [c for c in self.violations if c.group == group.code]
            if cats:
                yield group, cats
        ungrouped = [c for c in self.violations if c.group is None]
        if ungrouped:
            yield None, ungrouped


def _render_details(cat: Category) -> list[str]:
    out = [f"  Definition: {cat.definition}"]
    if cat.includes:
        out.append("  Includes: " + "; ".join(cat.includes))
    if cat.excludes:
        out.append("  Excludes: " + "; ".join(cat.excludes))
    if cat.examples:
        out.append("  Examples: " + "; ".join(f"「{e}」" for e in cat.examples))
    return out


def _no_duplicates(section: str, key: str, values: list[str]) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise ValueError(f"{section}[{i}].{key}: duplicate {key} '{value}' (each {key} must be unique)")
        seen.add(value)


# --------------------------------------------------------------------------- loading


# Bounds on what a policy file may cost. The shipped policy is 10 KB, ~400 YAML nodes and renders to
# ~6k characters; these leave two orders of magnitude of room and stop a hostile or broken file
# (a 45 MB description, a YAML alias bomb) before it eats memory or is sent with every request.
MAX_POLICY_BYTES = 1 << 20
MAX_YAML_NODES = 100_000  # counted with every alias expanded
MAX_POLICY_PROMPT_CHARS = 100_000  # policy.render(): the policy's share of every prompt


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file.

    Raises:
        PolicyError: the file is missing, not a regular file, over ``MAX_POLICY_BYTES``, not valid
            YAML, or breaks the schema or a size bound. The message names the file, the line and the field.
    """
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise PolicyError(f"Cannot read policy file {path}: not a regular file")
        if info.st_size > MAX_POLICY_BYTES:
            raise PolicyError(_too_big(str(path), info.st_size))
        with path.open("rb") as handle:
            raw = handle.read(MAX_POLICY_BYTES + 1)  # the file may grow after stat()
        if len(raw) > MAX_POLICY_BYTES:
            raise PolicyError(_too_big(str(path), len(raw)))
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise PolicyError(f"Policy file not found: {path}. Pass --policy with the path of a policy YAML.") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PolicyError(f"Cannot read policy file {path}: {exc}") from None
    return parse_policy(text, source=str(path))


def _too_big(source: str, size: int) -> str:
    return (
        f"{source}: the policy is {size:,} bytes; the limit is {MAX_POLICY_BYTES:,} "
        "(a policy is definitions and a few examples per category: move long material out of it)"
    )


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Validate policy YAML text. ``source`` names the file in error messages.

    Raises:
        PolicyError: invalid YAML or schema, or over a size bound (``MAX_POLICY_BYTES``,
            ``MAX_YAML_NODES`` with aliases expanded, ``MAX_POLICY_PROMPT_CHARS`` rendered).
    """
    if len(text) > MAX_POLICY_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_POLICY_BYTES:
        raise PolicyError(_too_big(source, len(text.encode("utf-8", "surrogatepass"))))
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            raise PolicyError(f"{source}: the policy file is empty")
        # Aliases make a small file stand for a huge document (an "alias bomb": 9 levels of 10
        # aliases are 10^9 nodes). Count the expanded size without expanding, before anything walks it.
        nodes = _expanded_nodes(node)
        if nodes > MAX_YAML_NODES:
            raise PolicyError(
                f"{source}: the policy expands to {_short_count(nodes)} YAML nodes once its aliases (*name) are "
                f"resolved; the limit is {MAX_YAML_NODES:,} (an alias bomb?). Write the policy without nested aliases."
            )
        lines: dict[tuple[str | int, ...], int] = {}
        _index_lines(node, (), lines, source)
        # Composing checks the syntax only; constructing can still fail (e.g. a bare "=" is YAML's
        # unsupported !!value tag), so it sits under the same error handling.
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(f"{where}: not valid YAML: {problem}") from None
    except RecursionError:
        raise PolicyError(f"{source}: the policy is nested too deeply to be a policy file") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{source}:1: the policy must be a mapping with keys version, name, benign, categories")
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(_format_errors(exc, source, lines)) from None
    rendered = len(policy.render())
    if rendered > MAX_POLICY_PROMPT_CHARS:
        raise PolicyError(
            f"{source}: the policy renders to {rendered:,} characters of prompt text, sent with every request; "
            f"the limit is {MAX_POLICY_PROMPT_CHARS:,}. Shorten the description, definitions or examples."
        )
    return policy


def _expanded_nodes(root: yaml.Node) -> int:
    """How many nodes the document has with every alias expanded, computed on the shared graph."""
    size: dict[int, int] = {}
    pending: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in size:
            continue
        children = _children(node)
        if children_done:
            size[id(node)] = 1 + sum(size.get(id(c), 0) for c in children)
            pending.discard(id(node))
            continue
        if id(node) in pending:  # a node inside itself: endless once expanded
            return MAX_YAML_NODES + 1
        pending.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)
    return size[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _short_count(n: int) -> str:
    return f"{n:,}" if n < 10**12 else f"about 10^{len(str(n)) - 1}"


def _index_lines(
    node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[str | int, ...], int], source: str
) -> None:
    """Record the 1-based line of every key/item and reject duplicate keys (PyYAML keeps the last)."""
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                dotted = ".".join(str(p) for p in (*path, key))
                raise PolicyError(
                    f"{source}:{key_node.start_mark.line + 1}: duplicate key '{dotted}' (remove one of them)"
                )
            seen.add(key)
            out[(*path, key)] = key_node.start_mark.line + 1
            _index_lines(value_node, (*path, key), out, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*path, i), out, source)


_PATH_IN_MESSAGE = re.compile(r"^(\w+)\[(\d+)\](?:\.(\w+))?")


def _format_errors(exc: ValidationError, source: str, lines: dict[tuple[str | int, ...], int]) -> str:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; allowed keys are listed in prompts/README.md)"
        elif err["type"] == "enum":
            msg = f"{msg}, got {err.get('input')!r}"
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
            # Model-level checks carry their location in the message: map it back to a line.
            m = _PATH_IN_MESSAGE.match(msg)
            if m:
                loc = (m.group(1), int(m.group(2))) + ((m.group(3),) if m.group(3) else ())
                msg = msg[m.end() :].lstrip(" :")
            elif msg.startswith("benign:"):
                loc, msg = ("benign",), msg.removeprefix("benign:").strip()
        line = _nearest_line(loc, lines)
        field = ".".join(str(p) for p in loc) or "(top level)"
        problems.append(f"{source}:{line}: {field}: {msg}")
    head = f"Invalid policy file {source} ({len(problems)} problem{'s' if len(problems) > 1 else ''}):"
    return "\n".join([head, *("  " + p for p in problems)])


def _nearest_line(loc: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> int:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return 1


def default_policy_path() -> Path:
    """The shipped policy file (``prompts/policy.yaml``), overridable with ``KUAIMOD_PROMPTS_DIR``."""
    from kuaimod_open.judge.resources import prompts_dir

    return prompts_dir() / "policy.yaml"
