"""Policy editor handlers: validate, preview the prompt, dry-run, save as a new version, history, rollback.

The YAML goes through the same loader as the CLI (:func:`kuaimod_open.judge.policy.parse_policy`), so the
editor shows exactly the errors ``kuaimod moderate --policy`` would. Nothing is edited in place:
a save is a new file registered in the store (:func:`kuaimod_open.loop.registry.save_policy_version`).
"""

from __future__ import annotations

import difflib
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kuaimod_open.errors import ConfigError, KuaimodError, PolicyError
from kuaimod_open.evaluation.policy_diff import PolicyDiff, diff_policies
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.policy import Policy, parse_policy
from kuaimod_open.judge.prompt import build_messages, load_template
from kuaimod_open.loop import registry
from kuaimod_open.loop.feedback import current_labels, stored_samples

from .access import Session
from .audit import log_action
from .handlers import ReviewContext

HISTORY_HEADERS = ["id", "version", "status", "created (UTC)", "author", "note", "digest"]
FLIP_HEADERS = ["sample", "gold", "before", "after"]
METRIC_HEADERS = ["metric", "active", "edited", "change"]
EDITED = "<edited policy>"
_ERROR_LINE = re.compile(re.escape(EDITED) + r":(\d+):")
EXAMPLE_SAMPLE = Sample(id="example", title="示例标题 example title", ocr="屏幕文字 on-screen text", asr="语音 speech")


def validate(text: str) -> tuple[Policy | None, str]:
    """The parsed policy and '' when valid, else None and the loader's message (file line and field)."""
    try:
        return parse_policy(text, source=EDITED), ""
    except PolicyError as exc:
        return None, str(exc)


def error_lines(message: str) -> list[int]:
    """The line numbers a validation message points at, in order (the editor marks them, scrolled to the first)."""
    return sorted({int(m.group(1)) for m in _ERROR_LINE.finditer(message or "")})


def check_message(text: str) -> tuple[str, str]:
    """What the validation box shows for ``text``, and the lines to mark (comma separated; '' when valid)."""
    policy, error = validate(text)
    if policy is None:
        return error, ",".join(str(n) for n in error_lines(error))
    valid = f"✔ valid: {policy.name} v{policy.version} ({len(policy.categories)} categories, digest {policy.digest})"
    return valid, ""


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


@dataclass
class DryRun:
    """A dry run's outcome: a summary line, the changed fields, the flips and the metric changes as table rows."""

    summary: str
    changes: list[str] = field(default_factory=list)
    flips: list[list[Any]] = field(default_factory=list)
    metrics: list[list[Any]] = field(default_factory=list)


def _dry_run_tables(diff: PolicyDiff, note: str) -> DryRun:
    summary = (
        f"{diff.old_version} → {diff.new_version}: {len(diff.flips)} of {diff.n} samples flip decision or category"
        + (f" ({note})" if note else "")
    )
    changes = [f"+ category {c}" for c in diff.added] + [f"− category {c}" for c in diff.removed]
    changes += [f"~ {ch.code}.{ch.field}: {str(ch.old)[:80]} → {str(ch.new)[:80]}" for ch in diff.changes]
    flips = [
        [f.sample_id, f.gold or "", f"{f.old_decision} / {f.old_category or '-'}",
         f"{f.new_decision} / {f.new_category or '-'}"]
        for f in diff.flips
    ]  # fmt: skip
    metrics = []
    if diff.metrics_old is not None and diff.metrics_new is not None:
        for key, old_value in diff.metrics_old.items():
            new_value = diff.metrics_new[key]
            metrics.append([key, f"{old_value:.3f}", f"{new_value:.3f}", f"{new_value - old_value:+.3f}"])
    return DryRun(summary=summary, changes=changes, flips=flips, metrics=metrics)


def dry_run(ctx: ReviewContext, text: str, session: Session) -> DryRun:
    """Replay the active and the edited policy on stored samples: flips and metric changes as tables."""
    new, error = validate(text)
    if new is None:
        return DryRun(summary=f"no dry run: the policy is invalid. {error}")
    if ctx.config.predictor is None:
        return DryRun(summary=ctx.config.predictor_error)
    old, _ = ctx.policy()
    samples, note = dry_run_samples(ctx, old, new)
    if not samples:
        return DryRun(summary="no samples in the store to replay the edit on")
    try:
        diff = diff_policies(samples, old, new, ctx.config.predictor)
    except KuaimodError as exc:
        return DryRun(summary=f"dry run failed: {exc}")
    log_action(ctx.store, session.name, "policy_dry_run", None, old=old.version, new=new.version,
               flips=len(diff.flips))  # fmt: skip
    return _dry_run_tables(diff, note)


def save(ctx: ReviewContext, text: str, session: Session, note: str = "") -> registry.Artefact:
    """Validate and save the text as a new candidate policy version (activating it is a separate,
    confirmed step for admins: :func:`ask_activate`).

    Raises:
        PolicyError: the text is not a valid policy.
        ConfigError: the version already exists (bump ``version``).
    """
    current = registry.active(ctx.store, "policy")
    folder = ctx.config.policy_versions_dir
    art = registry.save_policy_version(
        ctx.store, text, folder, note=note, author=session.name, parent=current.name if current else None
    )
    log_action(ctx.store, session.name, "policy_save", None, version=art.name, id=art.id, note=note)
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
    """The unified diff of a version against the version registered before it, labelled by version (the
    files' server paths are not shown to the browser)."""
    items = registry.history(ctx.store, "policy")
    index = next((i for i, a in enumerate(items) if a.id == artefact_id), None)
    if index is None:
        return f"no policy version with id {artefact_id}"
    art = items[index]
    if index == 0:
        return f"{art.name} is the first registered version (nothing to compare with)"
    before = items[index - 1]
    if not (Path(before.path).is_file() and Path(art.path).is_file()):
        return f"cannot diff: the file of version {before.name} or {art.name} is missing on the server"
    old = Path(before.path).read_text(encoding="utf-8").splitlines(keepends=True)
    new = Path(art.path).read_text(encoding="utf-8").splitlines(keepends=True)
    label = "version {} (id {})".format
    diff = "".join(
        difflib.unified_diff(old, new, fromfile=label(before.name, before.id), tofile=label(art.name, art.id))
    )
    return diff or f"{before.name} and {art.name} have identical text"


_DIFF_STYLES = {"+": "background:#dafbe1;color:#116329", "-": "background:#ffebe9;color:#82071e",
                "@": "background:#ddf4ff;color:#0550ae"}  # fmt: skip


def diff_html(diff: str) -> str:
    """A unified diff as coloured HTML: additions green, removals red, hunk headers blue."""
    rows = []
    for line in diff.splitlines():
        kind = line[:1] if not line.startswith(("+++", "---")) else "h"
        style = _DIFF_STYLES.get(kind, "font-weight:600" if kind == "h" else "")
        name = {"+": "add", "-": "del", "@": "hunk", "h": "file"}.get(kind, "ctx")
        body = html.escape(line) or "&nbsp;"
        rows.append(f'<div class="km-diff-{name}" style="{style};white-space:pre-wrap;padding:0 6px">{body}</div>')
    return (
        '<div class="km-diff" style="font-family:ui-monospace,monospace;font-size:13px;border:1px solid '
        '#d0d7de;border-radius:6px;max-height:420px;overflow:auto">' + "".join(rows) + "</div>"
    )


@dataclass(frozen=True)
class Pending:
    """An activation or rollback waiting for the admin's confirmation."""

    action: str  # "activate" or "rollback"
    target_id: int
    target_name: str
    active_id: int | None  # the active version when the question was asked
    question: str


def _policy_artefact(ctx: ReviewContext, artefact_id: int) -> registry.Artefact:
    art = registry.get(ctx.store, artefact_id)
    if art.kind != "policy":
        raise ConfigError(f"artefact {artefact_id} is a {art.kind}, not a policy")
    return art


def ask_activate(ctx: ReviewContext, session: Session, artefact_id: int) -> Pending:
    """The confirmation question for activating a version (admins only)."""
    session.require_admin("activate a policy version")
    art = _policy_artefact(ctx, artefact_id)
    current = registry.active(ctx.store, "policy")
    if current is not None and current.id == art.id:
        raise ConfigError(f"version {art.name} (id {art.id}) is already the active policy")
    was = f" (replacing {current.name}, id {current.id})" if current else ""
    question = f"Activate policy version {art.name} (id {art.id}){was}? New verdicts will be judged under it."
    return Pending("activate", art.id, art.name, current.id if current else None, question)


def ask_rollback(ctx: ReviewContext, session: Session) -> Pending:
    """The confirmation question for rolling back to the version active before the current one (admins only)."""
    session.require_admin("roll back the policy")
    current = registry.active(ctx.store, "policy")
    earlier = [a for a in registry.history(ctx.store, "policy")
               if a.status is registry.Status.RETIRED and (current is None or a.id < current.id)]  # fmt: skip
    if not earlier:
        raise ConfigError("no earlier policy version to roll back to")
    target = earlier[-1]
    was = f"{current.name} (id {current.id})" if current else "none"
    question = f"Roll back the active policy from {was} to {target.name} (id {target.id})?"
    return Pending("rollback", target.id, target.name, current.id if current else None, question)


def confirm(ctx: ReviewContext, session: Session, pending: Pending) -> registry.Artefact:
    """Carry out a confirmed activation or rollback (admins only), if nothing changed since it was asked.

    Raises:
        AccessError: the session is not an admin's.
        ConfigError: the active policy changed since the question was asked (ask again).
    """
    session.require_admin(f"{pending.action} the policy")
    current = registry.active(ctx.store, "policy")
    if (current.id if current else None) != pending.active_id:
        raise ConfigError("the active policy changed since you were asked; look at the history and ask again")
    art = registry.activate(ctx.store, _policy_artefact(ctx, pending.target_id).id)
    log_action(ctx.store, session.name, f"policy_{pending.action}", None, version=art.name, id=art.id,
               previous=pending.active_id)  # fmt: skip
    return art
