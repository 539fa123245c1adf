"""``update policy``: mine disagreements between verdicts and later human decisions into a new policy version.

For every case where a reviewer (or an appeal) decided differently from the model:

- the correct category gets the case as a new example, and the reviewer's reason as an
  "includes" clarification;
- the category the model wrongly chose gets an "excludes" clarification pointing at the right one.

The result is a *new* file (never an in-place edit) with a bumped patch version, a readable diff and
a changelog entry, registered as a candidate; the evaluation gate decides whether it goes live.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from kuaimod_open.evaluation.metrics import evaluate
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.policy import Policy, parse_policy
from kuaimod_open.judge.verdict import Verdict
from kuaimod_open.loop.feedback import Disagreement, disagreements, stored_samples
from kuaimod_open.loop.gate import GateConfig, GateResult, compare, record
from kuaimod_open.loop.registry import (
    TMP_PREFIX,
    Artefact,
    get,
    history,
    register_policy_file,
    save_policy_version,
    write_atomically,
)
from kuaimod_open.loop.store import Store
from kuaimod_open.loop.updaters.lock import run_lock
from kuaimod_open.loop.updaters.recovery import GATE_PENDING, GATE_SKIPPED, apply_decision, recover

WATERMARK = "policy"
MAX_EXAMPLES = 8  # per category: more examples dilute the prompt and cost context
MAX_CLARIFICATIONS = 12
CASE_CHARS = 60

Predictor = Callable[[Sequence[Sample], Policy], list[Verdict]]


class PolicyProposal(NamedTuple):
    """What ``propose_policy`` derived from the disagreements."""

    policy: Policy
    text: str
    changes: list[str]
    consumed_until: int


def bump_version(version: str) -> str:
    """1.0.0 -> 1.0.1; a version without a trailing number gets ``.1`` appended."""
    match = re.match(r"^(.*?)(\d+)$", version)
    return f"{match.group(1)}{int(match.group(2)) + 1}" if match else f"{version}.1"


def canonical_yaml(policy: Policy, header: str = "") -> str:
    """The policy as YAML in a stable layout (so diffs between generated versions stay readable)."""
    body = str(yaml.safe_dump(policy.model_dump(mode="json"), allow_unicode=True, sort_keys=False, width=110))
    return (header + body) if header else body


def _short_case(sample: Sample | None) -> str:
    if sample is None:
        return ""
    text = sample.title.strip() or sample.ocr.strip() or sample.asr.strip()
    return re.sub(r"\s+", " ", text)[:CASE_CHARS]


def propose_policy(
    store: Store, policy: Policy, *, after_id: int = 0, taken: set[str] | frozenset[str] = frozenset()
) -> PolicyProposal | None:
    """A new policy version from the disagreements newer than ``after_id``; None when there are none.

    The version is the base's, bumped past any in ``taken`` (rejected candidates keep their numbers).
    """
    found: list[Disagreement] = disagreements(store, after_id=after_id)
    if not found:
        return None
    samples = stored_samples(store, {d.verdict.sample_id for d in found})
    data: dict[str, Any] = policy.model_dump(mode="json")
    cats = {c["code"]: c for c in data["categories"]}
    changes: list[str] = []
    additions: dict[tuple[str, str], list[str]] = defaultdict(list)
    for d in found:
        right = d.feedback.category
        if right is None or right not in cats:
            continue  # the category was removed from the policy since the decision
        case = _short_case(samples.get(d.verdict.sample_id))
        reason = d.feedback.reason.strip()
        if case and right != policy.benign:
            additions[(right, "examples")].append(case)
        if reason and right != policy.benign:
            additions[(right, "includes")].append(reason)
        wrong = d.verdict.category
        if wrong is not None and wrong in cats and wrong != policy.benign and wrong != right:
            note = f"{case or d.verdict.sample_id} → {right}" + (f" ({reason})" if reason else "")
            additions[(wrong, "excludes")].append(note)
    for (code, key), values in additions.items():
        limit = MAX_EXAMPLES if key == "examples" else MAX_CLARIFICATIONS
        current = list(cats[code].get(key) or [])
        for value in values:
            if value not in current:
                current.append(value)
                changes.append(f"{code}.{key} += {value!r}")
        cats[code][key] = current[-limit:]  # newest cases win when over the budget
    if not changes:
        return None
    version = bump_version(policy.version)
    while version in taken:
        version = bump_version(version)
    data["version"] = version
    new_policy = parse_policy(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), source="<proposed policy>")
    header = (
        f"# Proposed by `kuaimod update policy` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from {len(found)} "
        f"disagreement(s) with human decisions.\n# Base: version {policy.version} ({policy.digest}).\n"
    )
    return PolicyProposal(new_policy, canonical_yaml(new_policy, header), changes, max(d.feedback_id for d in found))


class PolicyUpdate(NamedTuple):
    """The outcome of one ``update policy`` run."""

    candidate: Artefact | None
    gate: GateResult | None
    changes: list[str]
    diff_path: Path | None
    message: str


def update_policy(
    store: Store,
    base_path: str | Path,
    versions_dir: str | Path,
    *,
    predictor: Predictor | None = None,
    golden: Sequence[Sample] = (),
    gate_config: GateConfig | None = None,
    author: str = "kuaimod update policy",
) -> PolicyUpdate:
    """Propose, save and (with a predictor and a golden set) gate a new policy version.

    Safe to run from cron: it consumes disagreements after the ``policy`` watermark only, a run
    with nothing new does nothing, two runs on one folder never overlap (a kernel lock), and a run
    killed at any point is recovered by the next (:mod:`kuaimod_open.loop.updaters.recovery`).
    """
    from kuaimod_open.judge.policy import load_policy
    from kuaimod_open.loop.registry import policy_diff_text

    folder = Path(versions_dir)
    can_gate = predictor is not None and bool(golden)
    with run_lock(folder, "update policy"):
        regate = None
        if predictor is not None and can_gate:
            regate = partial(_regate, store, predictor=predictor, golden=golden, config=gate_config)
        recovered = recover(store, "policy", folder, "policy.v*.yaml", regate=regate, complete=_loads, ours=_proposed)
        if recovered.feedback_until is not None and recovered.feedback_until > store.watermark(WATERMARK):
            store.set_watermark(WATERMARK, recovered.feedback_until)
        note = f" ({recovered.message})" if recovered.message else ""
        base = load_policy(base_path)
        base_art = register_policy_file(store, base_path)
        taken = {a.name for a in history(store, "policy")}
        proposal = propose_policy(store, base, after_id=store.watermark(WATERMARK), taken=taken)
        if proposal is None:
            return PolicyUpdate(None, None, [], None, "no new disagreements since the last run; nothing to do" + note)
        candidate = save_policy_version(
            store,
            proposal.text,
            folder,
            note=f"{len(proposal.changes)} changes",
            author=author,
            parent=base.version,
            extra_meta={
                "base_id": base_art.id,
                "feedback_until": proposal.consumed_until,
                "gate": GATE_PENDING if can_gate else GATE_SKIPPED,
            },
        )
        base_canon = write_atomically(folder / f"{TMP_PREFIX}base.v{base.version}.yaml", canonical_yaml(base))
        diff_path = Path(candidate.path).with_suffix(".diff")
        write_atomically(diff_path, policy_diff_text(base_canon, candidate.path))
        base_canon.unlink()
        _changelog(folder, base, proposal)
        result = None
        if predictor is not None and can_gate:
            result = gate_policy(store, base, proposal.policy, base_art, candidate, predictor, golden, gate_config)
            verdict = "promoted" if result.passed else "rejected"
            message = f"candidate {candidate.name} {verdict} by the gate: " + "; ".join(result.reasons)
        else:
            message = (
                f"candidate {candidate.name} saved; no predictor/golden set given, so it was not gated or promoted"
            )
        # Last: a run killed before this point is recovered by the next one, not silently consumed.
        store.set_watermark(WATERMARK, proposal.consumed_until)
        return PolicyUpdate(get(store, candidate.id), result, proposal.changes, diff_path, message + note)


def gate_policy(
    store: Store,
    base: Policy,
    candidate_policy: Policy,
    base_art: Artefact,
    candidate: Artefact,
    predictor: Predictor,
    golden: Sequence[Sample],
    config: GateConfig | None = None,
) -> GateResult:
    """Replay both policies on the golden set, store the decision, promote or reject the candidate."""
    baseline_report = evaluate(golden, predictor(golden, base), base)
    candidate_report = evaluate(golden, predictor(golden, candidate_policy), candidate_policy)
    result = compare("policy", candidate.name, base_art.name, candidate_report, baseline_report, config)
    record(store, result)
    apply_decision(store, candidate, result)
    return result


def _regate(
    store: Store, candidate: Artefact, *, predictor: Predictor, golden: Sequence[Sample], config: GateConfig | None
) -> GateResult:
    """Gate a candidate an interrupted run saved, against the policy it was proposed from."""
    from kuaimod_open.judge.policy import load_policy

    base_art = get(store, int(candidate.meta["base_id"]))
    base, proposed = load_policy(base_art.path), load_policy(candidate.path)
    return gate_policy(store, base, proposed, base_art, candidate, predictor, golden, config)


def _loads(art: Artefact) -> bool:
    from kuaimod_open.errors import KuaimodError
    from kuaimod_open.judge.policy import load_policy

    try:
        load_policy(art.path)
    except KuaimodError:
        return False
    return isinstance(art.meta.get("base_id"), int)


def _proposed(path: Path) -> bool:
    """A version file this updater wrote (it starts with its header); others in the folder are left alone."""
    try:
        with path.open(encoding="utf-8") as handle:
            return handle.read(40).startswith("# Proposed by `kuaimod update policy`")
    except (OSError, UnicodeDecodeError):
        return False


def _changelog(folder: Path, base: Policy, proposal: PolicyProposal) -> None:
    entry = [
        f"## policy {proposal.policy.version} (proposed {datetime.now(UTC):%Y-%m-%d}) from {base.version}",
        *(f"- {c}" for c in proposal.changes[:50]),
        "",
    ]
    path = folder / "CHANGELOG.md"
    previous = path.read_text(encoding="utf-8") if path.exists() else "# Proposed policy versions\n\n"
    write_atomically(path, previous + "\n".join(entry) + "\n")
