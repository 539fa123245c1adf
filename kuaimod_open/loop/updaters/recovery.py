"""Crash consistency for the updaters: what a killed run left behind is finished or removed by the next run.

An update run (router, policy, LoRA) goes: write the artefact under a temporary name, rename it
into place, register it as a candidate with ``meta["gate"] = "pending"``, run the gate, record
the decision, apply it (activate or reject), and only then move the feedback watermark. A run can
be killed between any two of these steps. At its start, under the folder's run lock (so nothing
found belongs to a live run), the next run calls :func:`recover`:

* a candidate whose decision was recorded but not applied gets it applied;
* a pending candidate without a decision is re-gated when the run can gate (a golden set, a
  predictor) and its artefact is complete, else discarded (rejected, its files removed);
* temporary files and folders, and artefact folders no candidate points to, are removed;
* the watermark moves to the last feedback a decided candidate consumed, so the same decisions are
  not trained on twice.

A candidate saved on purpose without a gate (no golden set) has ``meta["gate"] = "skipped"`` and
is left alone.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from kuaimod_open.loop.gate import GateResult, decisions
from kuaimod_open.loop.registry import TMP_PREFIX, Artefact, Status, activate, history, set_status, update_meta
from kuaimod_open.loop.store import Store

GATE_PENDING = "pending"
GATE_SKIPPED = "skipped"
GATE_DECIDED = "decided"


class Recovered(NamedTuple):
    """What :func:`recover` found and did."""

    applied: list[str]  # recorded decisions applied
    regated: list[str]
    discarded: list[str]
    removed: list[str]  # temporary and orphaned files and folders
    feedback_until: int | None  # the last feedback id consumed by a candidate decided here

    @property
    def message(self) -> str:
        """One line for the run's report ('' when nothing was left behind)."""
        parts = [
            f"{label} {', '.join(names)}"
            for label, names in (
                ("applied the recorded gate decision of", self.applied),
                ("re-gated", self.regated),
                ("discarded (incomplete or not gateable)", self.discarded),
                ("removed leftovers", self.removed),
            )
            if names
        ]
        return ("recovered from an interrupted run: " + "; ".join(parts)) if parts else ""


def apply_decision(store: Store, candidate: Artefact, result: GateResult) -> Artefact:
    """Activate or reject ``candidate`` as the recorded ``result`` says, and mark its gate decided."""
    art = activate(store, candidate.id) if result.passed else set_status(store, candidate.id, Status.REJECTED)
    return update_meta(store, art.id, gate=GATE_DECIDED)


def recover(
    store: Store,
    kind: str,
    folder: Path,
    artefact_glob: str,
    *,
    regate: Callable[[Artefact], GateResult] | None = None,
    complete: Callable[[Artefact], bool] = lambda art: Path(art.path).exists(),
    ours: Callable[[Path], bool] = lambda path: True,
) -> Recovered:
    """Finish or undo what an interrupted run of the ``kind`` updater left (see the module docstring).

    ``artefact_glob`` matches the names this updater gives its artefacts in ``folder`` (e.g.
    ``router-*``); an unregistered match is an orphan. ``regate`` runs the gate on a candidate
    (recording and applying the decision); None when this run cannot gate. ``complete`` says
    whether a candidate's artefact is whole; ``ours`` whether an unregistered match was written by
    this updater (only those are removed).
    """
    recorded = {d.candidate: d for d in decisions(store, kind)}  # the last decision per candidate
    applied, regated, discarded = [], [], []
    consumed: list[int] = []
    for art in history(store, kind):
        if art.status is not Status.CANDIDATE or art.meta.get("gate") != GATE_PENDING:
            continue
        if art.name in recorded:
            apply_decision(store, art, recorded[art.name])
            applied.append(art.name)
        elif regate is not None and complete(art):
            regate(art)
            regated.append(art.name)
        else:
            set_status(store, art.id, Status.REJECTED)
            update_meta(store, art.id, gate="discarded: its run was interrupted before the gate decided")
            _remove(Path(art.path))
            discarded.append(art.name)
            continue
        if isinstance(art.meta.get("feedback_until"), int):
            consumed.append(art.meta["feedback_until"])
    removed = remove_orphans(store, kind, folder, artefact_glob, ours)
    return Recovered(applied, regated, discarded, removed, max(consumed, default=None))


def remove_orphans(
    store: Store, kind: str, folder: Path, artefact_glob: str, ours: Callable[[Path], bool] = lambda path: True
) -> list[str]:
    """Remove temporary files/folders, and artefacts of ours no registered ``kind`` points to; returns their names."""
    if not folder.is_dir():
        return []
    registered = {Path(a.path).resolve() for a in history(store, kind)}
    leftovers: Iterable[Path] = [*folder.glob(TMP_PREFIX + "*"), *(p for p in folder.glob(artefact_glob) if ours(p))]
    removed = []
    for path in sorted(set(leftovers)):
        if path.resolve() in registered:
            continue
        _remove(path)
        removed.append(path.name)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


__all__ = ["GATE_DECIDED", "GATE_PENDING", "GATE_SKIPPED", "Recovered", "apply_decision", "recover", "remove_orphans"]
