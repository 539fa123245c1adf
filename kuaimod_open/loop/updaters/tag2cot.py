"""Training data for LoRA updates: Tag2CoT chains checked by CoT2Tag, and DPO preference pairs.

KuaiMod's offline data construction, on the cases reviewers decided:

- **Tag2CoT** – a teacher model (any :class:`~kuaimod_open.judge.backends.base.Backend`) sees the normal
  moderation prompt plus a note naming the reviewer's category (``prompts/tag2cot.md``) and writes
  the five-step state-transition reasoning that leads to it;
- **CoT2Tag** – the chain is parsed back with :func:`~kuaimod_open.judge.verdict.parse_verdict`; only a
  well-formed chain whose own category is the reviewer's is kept, so the student never learns
  reasoning that argues for something else.

The student is trained on the moderation prompt alone (the note is for the teacher only). Cases
where the deployed model disagreed with the reviewer also give DPO pairs: the kept chain is
*chosen*, the model's original wrong answer *rejected*.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from kuaimod_open import __version__
from kuaimod_open.errors import KuaimodError, PromptError
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.backends.base import Backend, Request
from kuaimod_open.judge.flags import Flag
from kuaimod_open.judge.pipeline import ModerationConfig, prepare
from kuaimod_open.judge.policy import Category, Policy
from kuaimod_open.judge.prompt import Message, Template, build_messages, neutralise
from kuaimod_open.judge.verdict import ParseStatus, Provenance, parse_verdict
from kuaimod_open.loop.feedback import LABEL_KINDS, disagreements, feedback_rows
from kuaimod_open.loop.gate import training_set
from kuaimod_open.loop.store import Store

TAG2COT_VARIABLES = frozenset({"code", "tag", "name", "definition", "reason"})
TAG2COT_REQUIRED = frozenset({"code"})
REASON_CHARS = 500  # reviewer notes are free text; a bounded excerpt is enough context for the teacher


@dataclass(frozen=True)
class Tag2CoTTemplate:
    """A loaded, validated Tag2CoT instruction template."""

    text: str
    source: str
    digest: str


def load_tag2cot_template(path: str | Path | None = None) -> Tag2CoTTemplate:
    """Read and validate a Tag2CoT template (default: the shipped ``prompts/tag2cot.md``)."""
    if path is None:
        from kuaimod_open.judge.resources import prompts_dir

        path = prompts_dir() / "tag2cot.md"
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PromptError(
            f"Cannot read Tag2CoT template {path}: {exc.strerror or exc}. Pass --tag2cot-template FILE or "
            "restore prompts/tag2cot.md."
        ) from None
    return parse_tag2cot_template(text, source=str(path))


def parse_tag2cot_template(text: str, source: str = "<tag2cot>") -> Tag2CoTTemplate:
    """Validate template text: known ``$placeholders`` only, and ``$code`` present."""
    if not text.strip():
        raise PromptError(f"{source}: the Tag2CoT template is empty")
    tpl = string.Template(text)
    if not tpl.is_valid():
        raise PromptError(f"{source}: invalid placeholder; write a literal '$' as '$$'")
    names = set(tpl.get_identifiers())
    unknown = sorted(names - TAG2COT_VARIABLES)
    if unknown:
        raise PromptError(
            f"{source}: unknown placeholder(s) {', '.join('$' + n for n in unknown)}; "
            f"known: {', '.join('$' + n for n in sorted(TAG2COT_VARIABLES))}"
        )
    missing = sorted(TAG2COT_REQUIRED - names)
    if missing:
        raise PromptError(f"{source}: required placeholder(s) missing: {', '.join('$' + n for n in missing)}")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return Tag2CoTTemplate(text=text, source=source, digest=digest)


def tag2cot_messages(
    messages: Sequence[Message], category: Category, reason: str, template: Tag2CoTTemplate
) -> tuple[Message, ...]:
    """The moderation messages with the teacher's note (naming ``category``) appended to the user turn."""
    note = string.Template(template.text).substitute(
        code=category.code,
        tag=category.tag,
        name=category.name,
        definition=category.definition,
        # Reviewer notes are typed by people but may quote the video: neutralise like any untrusted text.
        reason=neutralise(reason.strip()[:REASON_CHARS]) or "(none)",
    )
    *head, last = messages
    if last.role != "user":
        raise PromptError("the moderation prompt must end with a user message to append the Tag2CoT note")
    return (*head, Message("user", (*last.parts, "\n\n" + note.strip() + "\n")))


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Case:
    """A human-decided sample of the training split."""

    sample: Sample
    code: str
    reason: str
    feedback_id: int


@dataclass(frozen=True)
class Chain:
    """A teacher chain that CoT2Tag confirmed, with the prompt the student will see."""

    case: Case
    messages: tuple[Message, ...]
    answer: str


@dataclass(frozen=True)
class PreferencePair:
    """A DPO pair: the corrected chain is preferred over the model's original wrong answer."""

    sample_id: str
    messages: tuple[Message, ...]
    chosen: str
    rejected: str


class DataCounts(BaseModel):
    """What data building kept and dropped, and why."""

    cases: int = 0
    kept: int = 0
    dropped_wrong_label: int = 0
    dropped_unparsed: int = 0
    dropped_teacher_error: int = 0
    dropped_input_error: int = 0
    disagreements: int = 0
    pairs: int = 0

    @property
    def dropped(self) -> int:
        """All chains not kept."""
        return self.dropped_wrong_label + self.dropped_unparsed + self.dropped_teacher_error + self.dropped_input_error


class DataSnapshot(BaseModel):
    """Which feedback a training run consumed (recorded in the adapter's metadata)."""

    watermark_before: int
    last_feedback_id: int
    cases_hash: str
    n_cases: int
    holdout: float


@dataclass
class TrainingData:
    """Everything data building produced."""

    chains: list[Chain]
    pairs: list[PreferencePair]
    counts: DataCounts
    snapshot: DataSnapshot
    tag2cot_digest: str
    dropped: list[dict[str, str]] = field(default_factory=list)


def training_cases(store: Store, policy: Policy, *, holdout: float = 0.2) -> list[Case]:
    """The training split of human-decided samples, each with its latest decision's id and reason."""
    latest = {row["sample_id"]: row for row in feedback_rows(store, kinds=LABEL_KINDS)}
    cases = []
    for sample in training_set(store, policy, holdout=holdout):
        row = latest[sample.id]
        code = policy.by_tag(sample.label or "").code
        cases.append(Case(sample=sample, code=code, reason=row["reason"] or "", feedback_id=int(row["id"])))
    return sorted(cases, key=lambda c: c.feedback_id)


def write_chains(
    cases: Sequence[Case],
    policy: Policy,
    template: Template,
    teacher: Backend,
    tag2cot: Tag2CoTTemplate,
    config: ModerationConfig | None = None,
) -> tuple[list[Chain], DataCounts, list[dict[str, str]]]:
    """Tag2CoT then CoT2Tag: ask the teacher for each case's reasoning, keep the chains that agree."""
    config = config or ModerationConfig()
    counts = DataCounts(cases=len(cases))
    dropped: list[dict[str, str]] = []
    ready: list[tuple[Case, Sample, tuple[Message, ...], Request]] = []
    for case in cases:
        try:
            sample = prepare(case.sample, config)  # samples frames of video-backed samples
            messages = build_messages(sample, policy, template, limits=config.limits)
        except KuaimodError as exc:
            counts.dropped_input_error += 1
            dropped.append({"sample_id": case.sample.id, "why": f"input: {exc}"})
            continue
        teacher_messages = tag2cot_messages(messages, policy.category(case.code), case.reason, tag2cot)
        ready.append((case, sample, messages, Request(sample.id, teacher_messages)))
    provenance = Provenance(
        model=teacher.model_id,
        policy_version=policy.version,
        policy_digest=policy.digest,
        prompt_digest=template.digest,
        package_version=__version__,
    )
    chains: list[Chain] = []
    step = max(1, config.generate.batch_size)
    for start in range(0, len(ready), step):
        batch = ready[start : start + step]
        generations = teacher.generate([r for *_, r in batch], config.generate)
        for (case, sample, messages, _), gen in zip(batch, generations, strict=True):
            if gen.error is not None:
                counts.dropped_teacher_error += 1
                dropped.append({"sample_id": sample.id, "why": f"teacher error: {gen.error}"})
                continue
            if gen.truncated:  # an unfinished chain would teach the student to stop mid-reasoning
                counts.dropped_teacher_error += 1
                dropped.append({"sample_id": sample.id, "why": "teacher error: the chain hit max_new_tokens"})
                continue
            verdict = parse_verdict(gen.text, policy, sample, provenance)
            if verdict.status is not ParseStatus.OK or Flag.INCONSISTENT_CATEGORIES in verdict.flags:
                counts.dropped_unparsed += 1
                dropped.append({"sample_id": sample.id, "why": f"chain not well-formed ({verdict.status})"})
            elif verdict.category != case.code:
                counts.dropped_wrong_label += 1
                dropped.append({"sample_id": sample.id, "why": f"chain concludes {verdict.category}, not {case.code}"})
            else:
                chains.append(Chain(case=case, messages=messages, answer=gen.text.strip()))
    counts.kept = len(chains)
    return chains, counts, dropped


def preference_pairs(store: Store, chains: Sequence[Chain]) -> tuple[list[PreferencePair], int]:
    """DPO pairs for kept chains whose sample the model got wrong; also returns how many disagreements matched."""
    by_sample = {c.case.sample.id: c for c in chains}
    pairs: dict[str, PreferencePair] = {}
    matched = 0
    for found in disagreements(store):
        chain = by_sample.get(found.verdict.sample_id)
        # Only the disagreement with the sample's *current* label: a relabelled case keeps its history.
        if chain is None or found.feedback_id != chain.case.feedback_id:
            continue
        matched += 1
        rejected = found.verdict.raw_output.strip()
        if rejected and rejected != chain.answer:  # an error verdict has no answer to reject
            pairs[chain.case.sample.id] = PreferencePair(chain.case.sample.id, chain.messages, chain.answer, rejected)
    return list(pairs.values()), matched


def build_training_data(
    store: Store,
    policy: Policy,
    template: Template,
    teacher: Backend,
    *,
    tag2cot: Tag2CoTTemplate | None = None,
    config: ModerationConfig | None = None,
    holdout: float = 0.2,
) -> TrainingData:
    """SFT chains and DPO pairs from the store's training split, with counts and a data snapshot."""
    tag2cot = tag2cot or load_tag2cot_template()
    cases = training_cases(store, policy, holdout=holdout)
    chains, counts, dropped = write_chains(cases, policy, template, teacher, tag2cot, config)
    pairs, matched = preference_pairs(store, chains)
    counts.disagreements, counts.pairs = matched, len(pairs)
    label_rows = feedback_rows(store, kinds=LABEL_KINDS)
    key = "\n".join(f"{c.sample.id}|{c.feedback_id}|{c.code}" for c in cases)
    snapshot = DataSnapshot(
        watermark_before=store.watermark("lora"),
        last_feedback_id=max((int(r["id"]) for r in label_rows), default=0),
        cases_hash=hashlib.sha256(key.encode("utf-8")).hexdigest()[:16],
        n_cases=len(cases),
        holdout=holdout,
    )
    return TrainingData(chains, pairs, counts, snapshot, tag2cot.digest, dropped)


__all__ = [
    "Case",
    "Chain",
    "DataCounts",
    "DataSnapshot",
    "PreferencePair",
    "Tag2CoTTemplate",
    "TrainingData",
    "build_training_data",
    "load_tag2cot_template",
    "parse_tag2cot_template",
    "preference_pairs",
    "tag2cot_messages",
    "training_cases",
    "write_chains",
]
