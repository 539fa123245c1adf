"""``update router``: retrain the first-stage router on reviewers' decisions, behind the evaluation gate.

One run, safe from cron:

1. nothing happens unless reviewer decisions (or appeal outcomes) arrived since the ``router``
   watermark;
2. the training rows are the human-decided samples *not* held out for the gate
   (:func:`kuaimod_open.loop.gate.training_set`) plus any extra labelled rows given (e.g. the public
   benchmark); a row that is also in the golden set is dropped from training, so the gate never
   scores a router on rows it was fitted on;
3. a router is trained (:func:`kuaimod_open.first_stage.router.train_router`), saved under a
   temporary name, renamed into a new folder and registered as a candidate ``router``;
4. it and the active router (if any) score the golden set; the gate decides, the decision is
   stored, and the candidate becomes active only if it passed;
5. the watermark moves to the last decision consumed.

Runs hold a kernel lock on the folder, and each starts by recovering what a killed run left
(:mod:`kuaimod_open.loop.updaters.recovery`): a candidate without its gate decision is re-gated (or
discarded when it is incomplete or no golden set is given), leftovers are removed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from kuaimod_open.errors import ConfigError
from kuaimod_open.evaluation.metrics import evaluate
from kuaimod_open.first_stage.model import RouterConfig
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.policy import Policy
from kuaimod_open.loop.feedback import LABEL_KINDS, current_labels, feedback_rows
from kuaimod_open.loop.gate import GateConfig, GateResult, compare, record, training_set
from kuaimod_open.loop.registry import TMP_PREFIX, Artefact, active, get, history, register
from kuaimod_open.loop.store import Store
from kuaimod_open.loop.updaters.lock import run_lock
from kuaimod_open.loop.updaters.recovery import GATE_PENDING, GATE_SKIPPED, apply_decision, recover

WATERMARK = "router"
KIND = "router"


class RouterUpdate(NamedTuple):
    """The outcome of one ``update router`` run."""

    status: str  # nothing_new | saved | promoted | rejected
    message: str
    candidate: Artefact | None = None
    gate: GateResult | None = None
    n_train: int = 0
    watermark: int = 0


def update_router(
    store: Store,
    policy: Policy,
    routers_dir: str | Path,
    *,
    golden: Sequence[Sample],
    extra_train: Sequence[Sample] = (),
    config: RouterConfig | None = None,
    gate_config: GateConfig | None = None,
    holdout: float = 0.2,
    force: bool = False,
) -> RouterUpdate:
    """Run the router update once (see the module docstring).

    ``config`` sets features, calibration and cascade targets (default: the default router).
    ``force`` retrains even when no new decisions arrived (e.g. after changing the extra rows).

    Raises:
        ConfigError: the training rows cannot support a router (too few of a class), or another
            ``update router`` holds the folder's lock.
    """
    from kuaimod_open.first_stage.router import train_router  # scikit-learn and the embedder load here

    router_config = config or RouterConfig()
    folder = Path(routers_dir)
    with run_lock(folder, "update router"):
        gate = (lambda art: _gate(store, policy, art, golden, gate_config)) if golden else None
        recovered = recover(store, KIND, folder, "router-*", regate=gate, complete=_complete)
        before = store.watermark(WATERMARK)
        if recovered.feedback_until is not None and recovered.feedback_until > before:
            store.set_watermark(WATERMARK, recovered.feedback_until)  # the recovered candidate consumed these
            before = recovered.feedback_until
        note = f" ({recovered.message})" if recovered.message else ""
        fresh = feedback_rows(store, after_id=before, kinds=LABEL_KINDS)
        if not fresh and not force:
            return RouterUpdate(
                "nothing_new",
                f"no new reviewer decisions since feedback id {before}; nothing to do{note}",
                watermark=before,
            )
        consumed = max([int(r["id"]) for r in fresh], default=before)
        golden_ids = {s.id for s in golden}
        decided = training_set(store, policy, holdout=holdout)
        decided_ids = {s.id for s in decided}
        # Human decisions win over extra rows with the same id (a reviewer may have relabelled it).
        train = [s for s in decided if s.id not in golden_ids]
        train += [s for s in extra_train if s.label is not None and s.id not in golden_ids and s.id not in decided_ids]
        if not train:
            has_decisions = bool(current_labels(store))
            why = "every human decision is held out for the gate" if has_decisions else "no human decisions yet"
            raise ConfigError(
                f"no training rows: {why} and no extra rows were given; collect decisions (kuaimod feedback import, "
                "the review UI) or pass labelled rows (--train-data)"
            )
        router = train_router(train, policy, router_config)
        name = _new_name(store, folder, router.card.data_hash)
        path = folder / name
        # Written under a temporary name and renamed when whole: a run killed while saving leaves
        # only a temporary folder, which the next run removes.
        tmp = folder / f"{TMP_PREFIX}{name}"
        try:
            router.save(tmp)
            os.rename(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        meta = {
            "data_hash": router.card.data_hash,
            "n_train": len(train),
            "n_decisions": len([s for s in train if s.id in decided_ids]),
            "features": list(router_config.features),
            "policy_version": policy.version,
            "policy_digest": policy.digest,
            "oof_metrics": router.card.metrics,
            "feedback_until": consumed,
            "gate": GATE_PENDING if golden else GATE_SKIPPED,
        }
        candidate = register(store, KIND, name, path, meta=meta)
        if not golden:
            store.set_watermark(WATERMARK, consumed)
            return RouterUpdate(
                "saved",
                f"router {name} trained on {len(train)} rows and saved as a candidate; no golden set (pass --data or "
                f"collect more decisions), so it was not gated or promoted{note}",
                candidate,
                None,
                len(train),
                consumed,
            )
        result = _gate(store, policy, candidate, golden, gate_config)
        # The watermark moves last: a run killed before this point is recovered (re-gated or
        # retrained) by the next one instead of leaving decisions consumed by nothing.
        store.set_watermark(WATERMARK, consumed)
        status = "promoted" if result.passed else "rejected"
        return RouterUpdate(
            status,
            f"router {name} ({len(train)} training rows) {status} by the gate: " + "; ".join(result.reasons) + note,
            get(store, candidate.id),
            result,
            len(train),
            consumed,
        )


def _gate(
    store: Store, policy: Policy, candidate: Artefact, golden: Sequence[Sample], gate_config: GateConfig | None
) -> GateResult:
    """Score the candidate and the active router on the golden set; record and apply the decision."""
    from kuaimod_open.first_stage.router import load_router

    baseline_art = active(store, KIND)
    labelled_golden = [s for s in golden if s.label is not None]
    candidate_report = evaluate(labelled_golden, load_router(candidate.path).verdicts(labelled_golden, policy), policy)
    baseline_report = None
    if baseline_art is not None:
        baseline = load_router(baseline_art.path)
        baseline_report = evaluate(labelled_golden, baseline.verdicts(labelled_golden, policy), policy)
    result = compare(
        KIND,
        candidate.name,
        baseline_art.name if baseline_art else "(none)",
        candidate_report,
        baseline_report,
        gate_config,
    )
    record(store, result)
    apply_decision(store, candidate, result)
    return result


def _complete(art: Artefact) -> bool:
    from kuaimod_open.first_stage.router import load_router

    try:
        load_router(art.path)
    except ConfigError:
        return False
    return True


def _new_name(store: Store, folder: Path, data_hash: str) -> str:
    """``router-<n>-<data hash>``: ordered, and a retrain on identical data is recognisable."""
    taken = {a.name for a in history(store, KIND)}
    n = len(taken) + 1
    name = f"router-{n:03d}-{data_hash[:8]}"
    while name in taken or (folder / name).exists():
        n += 1
        name = f"router-{n:03d}-{data_hash[:8]}"
    return name


__all__ = ["RouterUpdate", "update_router"]
