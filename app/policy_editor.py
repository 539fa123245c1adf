"""Policy editor handlers: validate, preview the prompt, dry-run, save as a new version, history, rollback.

The YAML goes through the same loader as the CLI (:func:`kuaimod_open.judge.policy.parse_policy`), so the
editor shows exactly the errors ``kuaimod moderate --policy`` would. Nothing is edited in place:
a save is a new file registered in the store (:func:`kuaimod_open.loop.registry.save_policy_version`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kuaimod_open.errors import ConfigError, KuaimodError, PolicyError
from kuaimod_open.evaluation.policy_diff import diff_policies, render_diff
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.policy import Policy, parse_policy
from kuaimod_open.judge.prompt import build_messages, load_template
from kuaimod_open.loop import registry
from kuaimod_open.loop.feedback import current_labels, stored_samples

from .audit import log_action
from .handlers import ReviewContext

HISTORY_HEADERS = ["id", "version", "status", "created (UTC)", "author", "note", "digest"]
EDITED = "<edited policy>"
EXAMPLE_SAMPLE = Sample(id="example", title="示例标题 example title", ocr="屏幕文字 on-screen text", asr="语音 speech")


def validate(text: str) -> tuple[Policy | None, str]:
    """The parsed policy and '' when valid, else None and the loader's message (file line and field)."""
    try:
        return parse_policy(text, source=EDITED), ""
    except PolicyError as exc:
        return None, str(exc)


def active_text(ctx: ReviewContext) -> str:
    """The YAML text of the active policy."""
    _, path = ctx.policy()
    return path.read_text(encoding="utf-8")


def prompt_preview(ctx: ReviewContext, text: str, sample_id: str | None = None) -> str:
    """The prompt the edited policy would produce for a stored sample (or an example sample)."""
    policy, error = validate(text)
    if policy is None:
        return f"(no preview: the policy is invalid)\n\n{error}"
    sample = EXAMPLE_SAMPLE
    if sample_id:
        sample = stored_samples(ctx.store, [sample_id]).get(sample_id, EXAMPLE_SAMPLE)
    try:
        template = load_template(ctx.config.template)
    except KuaimodError as exc:
        return f"(no preview: {exc})"
    messages = build_messages(sample, policy, template)
    return "\n\n".join(f"===== {m.role} =====\n{m.text}" for m in messages)


def dry_run_samples(ctx: ReviewContext, old: Policy, new: Policy) -> tuple[list[Sample], str]:
    """Stored samples to replay: the human-labelled ones when there are any (so metrics can be computed)."""
    labels = current_labels(ctx.store)
    samples = list(stored_samples(ctx.store).values())
    note = ""
    labelled = []
    for sample in samples:
        event = labels.get(sample.id)
        cat = old.find(event.category or "") if event else None
        if cat is not None and new.find(cat.code) is not None:
            labelled.append(sample.model_copy(update={"label": cat.tag}))
    if labelled:
        chosen = labelled
    else:
        chosen = [s.model_copy(update={"label": None}) for s in samples]
        note = "no human-labelled samples in the store: flips only, no metrics"
    chosen = sorted(chosen, key=lambda s: s.id)[: ctx.config.dry_run_limit]
    return chosen, note


def dry_run(ctx: ReviewContext, text: str, reviewer: str) -> str:
    """Replay the active and the edited policy on stored samples; flips and metric deltas as text."""
    new, error = validate(text)
    if new is None:
        return error
    if ctx.config.predictor is None:
        return ctx.config.predictor_error
    old, _ = ctx.policy()
    samples, note = dry_run_samples(ctx, old, new)
    if not samples:
        return "no samples in the store to replay the edit on"
    try:
        diff = diff_policies(samples, old, new, ctx.config.predictor)
    except KuaimodError as exc:
        return f"dry run failed: {exc}"
    log_action(ctx.store, reviewer, "policy_dry_run", None, old=old.version, new=new.version, flips=len(diff.flips))
    return render_diff(diff) + (f"\n({note})" if note else "")


def save(ctx: ReviewContext, text: str, reviewer: str, note: str = "", activate: bool = False) -> registry.Artefact:
    """Validate and save the text as a new policy version (optionally making it active).

    Raises:
        PolicyError: the text is not a valid policy.
        ConfigError: the version already exists (bump ``version``).
    """
    current = registry.active(ctx.store, "policy")
    folder = ctx.config.policy_versions_dir
    art = registry.save_policy_version(
        ctx.store, text, folder, note=note, author=reviewer, parent=current.name if current else None
    )
    log_action(ctx.store, reviewer, "policy_save", None, version=art.name, id=art.id, note=note)
    if activate:
        art = registry.activate(ctx.store, art.id)
        log_action(ctx.store, reviewer, "policy_activate", None, version=art.name, id=art.id)
    return art


def history_rows(ctx: ReviewContext) -> list[list[Any]]:
    """Every policy version, newest first."""
    ctx.policy()  # make sure the shipped policy is registered before listing
    rows = []
    for art in reversed(registry.history(ctx.store, "policy")):
        created = art.created_at.strftime("%Y-%m-%d %H:%M:%S")
        meta = art.meta
        rows.append([art.id, art.name, str(art.status), created, meta.get("author", ""), meta.get("note", ""),
                     meta.get("digest", "")])  # fmt: skip
    return rows


def version_diff(ctx: ReviewContext, artefact_id: int) -> str:
    """The unified diff of a version against the version registered before it."""
    items = registry.history(ctx.store, "policy")
    index = next((i for i, a in enumerate(items) if a.id == artefact_id), None)
    if index is None:
        return f"no policy version with id {artefact_id}"
    art = items[index]
    if index == 0:
        return f"{art.name} is the first registered version (nothing to compare with)"
    before = items[index - 1]
    if not (Path(before.path).is_file() and Path(art.path).is_file()):
        return f"cannot diff: {before.path} or {art.path} is missing"
    diff = registry.policy_diff_text(before.path, art.path)
    return diff or f"{before.name} and {art.name} have identical text"


def rollback(ctx: ReviewContext, reviewer: str, to: str | None = None) -> registry.Artefact:
    """Re-activate an earlier version (by name or id; default: the one active before the current one)."""
    art = registry.rollback(ctx.store, "policy", to or None)
    log_action(ctx.store, reviewer, "policy_rollback", None, version=art.name, id=art.id)
    return art


def activate(ctx: ReviewContext, reviewer: str, artefact_id: int) -> registry.Artefact:
    """Make a registered version the active policy (the previous active one is retired)."""
    art = registry.get(ctx.store, artefact_id)
    if art.kind != "policy":
        raise ConfigError(f"artefact {artefact_id} is a {art.kind}, not a policy")
    art = registry.activate(ctx.store, artefact_id)
    log_action(ctx.store, reviewer, "policy_activate", None, version=art.name, id=art.id)
    return art
