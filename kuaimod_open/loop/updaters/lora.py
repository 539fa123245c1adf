"""``update lora``: reviewers' decisions → Tag2CoT/CoT2Tag data → SFT + DPO LoRA adapter → gate.

One run, safe from cron:

1. nothing happens unless reviewer decisions arrived since the ``lora`` watermark;
2. a teacher writes state-transition chains for the training split; CoT2Tag keeps the ones whose own
   verdict is the reviewer's label (:mod:`.tag2cot`); disagreements give DPO pairs;
3. a LoRA adapter is trained on the student (:mod:`.lora_train`) and saved with ``meta.json``;
4. it is registered as a candidate ``adapter``; the current configuration (the base model with the
   active adapter, or none) and the candidate are both run on the golden set, the gate decides,
   the decision is stored, and the adapter is activated only if it passed;
5. the watermark moves to the last decision consumed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from kuaimod_open import __version__
from kuaimod_open.errors import ConfigError
from kuaimod_open.evaluation.metrics import EvalReport, evaluate
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.backends.base import Backend
from kuaimod_open.judge.pipeline import ModerationConfig, moderate
from kuaimod_open.judge.policy import Policy
from kuaimod_open.judge.prompt import Template
from kuaimod_open.loop.feedback import LABEL_KINDS, feedback_rows
from kuaimod_open.loop.gate import GateConfig, GateResult, compare, golden_set, record
from kuaimod_open.loop.registry import TMP_PREFIX, Artefact, active, get, history, register
from kuaimod_open.loop.store import Store
from kuaimod_open.loop.updaters.lock import run_lock
from kuaimod_open.loop.updaters.lora_train import LoraTrainConfig, TrainResult, release_memory, train_lora
from kuaimod_open.loop.updaters.recovery import GATE_PENDING, apply_decision, recover
from kuaimod_open.loop.updaters.tag2cot import DataCounts, DataSnapshot, Tag2CoTTemplate, build_training_data

WATERMARK = "lora"
KIND = "adapter"
META_FILE = "meta.json"

# Builds the model to evaluate: base model plus the given adapter directory (None: no adapter).
BackendFactory = Callable[[str | None], Backend]
# A teacher, or a function that builds one: then it is loaded only when there is work, and freed
# before training (a large local teacher and the student rarely fit one GPU together).
Teacher = Backend | Callable[[], Backend]


class AdapterMeta(BaseModel):
    """Everything needed to know what an adapter is and reproduce it; saved as ``meta.json``."""

    name: str
    base_model: str
    policy_version: str
    policy_digest: str
    prompt_digest: str
    tag2cot_digest: str
    teacher_model: str
    data: DataSnapshot
    counts: DataCounts
    training: LoraTrainConfig
    result: TrainResult
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    package_version: str = __version__


class LoraUpdate(BaseModel):
    """The outcome of one ``update lora`` run."""

    status: str  # nothing_new | no_training_data | promoted | rejected
    message: str
    adapter: Artefact | None = None
    meta: AdapterMeta | None = None
    gate: GateResult | None = None
    counts: DataCounts | None = None
    watermark: int


def read_meta(adapter_dir: str | Path) -> AdapterMeta:
    """The metadata saved next to an adapter."""
    path = Path(adapter_dir) / META_FILE
    if not path.is_file():
        raise ConfigError(f"{path} not found: not an adapter written by `kuaimod update lora`")
    return AdapterMeta.model_validate_json(path.read_text(encoding="utf-8"))


def _new_name(store: Store, folder: Path) -> str:
    taken = {a.name for a in history(store, KIND)}
    stem = "lora-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    name, n = stem, 1
    while name in taken or (folder / name).exists():
        n += 1
        name = f"{stem}-{n}"
    return name


def _evaluate(
    golden: Sequence[Sample], policy: Policy, template: Template, backend: Backend, config: ModerationConfig
) -> EvalReport:
    verdicts = list(moderate(golden, policy, backend, template, config))
    return evaluate(golden, verdicts, policy)


def gate_adapter(
    store: Store,
    candidate: Artefact,
    golden: Sequence[Sample],
    policy: Policy,
    template: Template,
    make_backend: BackendFactory,
    *,
    moderation: ModerationConfig | None = None,
    config: GateConfig | None = None,
) -> GateResult:
    """Evaluate the current adapter (or the bare base model) and the candidate; store and apply the decision."""
    moderation = moderation or ModerationConfig()
    current = active(store, KIND)
    baseline_name = current.name if current is not None else "base (no adapter)"
    if not golden:
        result = GateResult(
            kind=KIND,
            candidate=candidate.name,
            baseline=baseline_name,
            passed=False,
            reasons=["golden set is empty: no held-out reviewer decisions and no --benchmark rows to compare on"],
            target=(config or GateConfig()).target,
            baseline_metrics={},
            candidate_metrics={},
            category_recall_deltas={},
            n=0,
        )
    else:
        # One model in memory at a time: a 7B student twice may not fit one GPU.
        backend = make_backend(current.path if current is not None else None)
        baseline = _evaluate(golden, policy, template, backend, moderation)
        del backend
        release_memory()
        backend = make_backend(candidate.path)
        proposed = _evaluate(golden, policy, template, backend, moderation)
        del backend
        release_memory()
        result = compare(KIND, candidate.name, baseline_name, proposed, baseline, config)
    record(store, result)
    apply_decision(store, candidate, result)
    (Path(candidate.path) / "gate.json").write_text(result.model_dump_json(indent=2), encoding="utf-8")
    return result


def update_lora(
    store: Store,
    *,
    policy: Policy,
    template: Template,
    base_model: str,
    teacher: Teacher,
    out_dir: str | Path,
    make_backend: BackendFactory | None = None,
    train_config: LoraTrainConfig | None = None,
    moderation: ModerationConfig | None = None,
    benchmark: Sequence[Sample] = (),
    gate_config: GateConfig | None = None,
    holdout: float = 0.2,
    tag2cot: Tag2CoTTemplate | None = None,
) -> LoraUpdate:
    """Run the whole LoRA update once (see the module docstring); a run with no new decisions does nothing.

    ``teacher`` may be a function that builds the teacher (it is called only when there are new
    decisions). ``moderation`` sets frame preparation and generation for both the teacher and the gate runs;
    ``make_backend`` builds the evaluated model (default: :class:`HFBackend` of ``base_model`` on
    ``train_config.device``).
    """
    train_config = train_config or LoraTrainConfig()
    moderation = moderation or ModerationConfig()
    folder = Path(out_dir)
    if make_backend is None:
        make_backend = _hf_factory(base_model, train_config)
    with run_lock(folder, "update lora"):
        # A run killed mid-way: gate the adapter it registered (or drop an incomplete one), remove leftovers.
        recovered = recover(
            store,
            KIND,
            folder,
            "lora-*",
            regate=lambda art: gate_adapter(
                store,
                art,
                golden_set(store, policy, benchmark, holdout=holdout),
                policy,
                template,
                make_backend,
                moderation=moderation,
                config=gate_config,
            ),
            complete=lambda art: (Path(art.path) / META_FILE).is_file(),
        )
        if recovered.feedback_until is not None and recovered.feedback_until > store.watermark(WATERMARK):
            store.set_watermark(WATERMARK, recovered.feedback_until)
        before = store.watermark(WATERMARK)
        fresh = feedback_rows(store, after_id=before, kinds=LABEL_KINDS)
        if not fresh:
            note = f" ({recovered.message})" if recovered.message else ""
            return LoraUpdate(
                status="nothing_new",
                message=f"no new reviewer decisions since feedback id {before}; nothing to do{note}",
                watermark=before,
            )
        teacher_backend = teacher if isinstance(teacher, Backend) else teacher()
        teacher_id = teacher_backend.model_id
        data = build_training_data(
            store, policy, template, teacher_backend, tag2cot=tag2cot, config=moderation, holdout=holdout
        )
        del teacher_backend
        consumed = data.snapshot.last_feedback_id
        if not data.chains:
            store.set_watermark(WATERMARK, consumed)
            return LoraUpdate(
                status="no_training_data",
                message=(
                    f"{data.counts.cases} training cases, but no teacher chain passed CoT2Tag "
                    f"({data.counts.dropped} dropped); no adapter trained. Watermark -> {consumed}"
                ),
                counts=data.counts,
                watermark=consumed,
            )
        name = _new_name(store, folder)
        adapter_dir = folder / name
        if not isinstance(teacher, Backend):
            release_memory()  # the teacher we built is unreferenced now
        # Trained under a temporary name and renamed when whole (with its meta file): a run killed while
        # training leaves only a temporary folder, which the next run removes.
        work_dir = folder / f"{TMP_PREFIX}{name}"
        try:
            trained = train_lora(base_model, data.chains, data.pairs, work_dir, train_config)
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)  # no half-written adapter for a later run to trip on
            raise
        meta = AdapterMeta(
            name=name,
            base_model=base_model,
            policy_version=policy.version,
            policy_digest=policy.digest,
            prompt_digest=template.digest,
            tag2cot_digest=data.tag2cot_digest,
            teacher_model=teacher_id,
            data=data.snapshot,
            counts=data.counts,
            training=train_config,
            result=trained,
        )
        (work_dir / META_FILE).write_text(meta.model_dump_json(indent=2), encoding="utf-8")
        os.rename(work_dir, adapter_dir)
        registered = {**meta.model_dump(mode="json"), "gate": GATE_PENDING, "feedback_until": consumed}
        candidate = register(store, KIND, name, adapter_dir, meta=registered)
        golden = golden_set(store, policy, benchmark, holdout=holdout)
        result = gate_adapter(
            store, candidate, golden, policy, template, make_backend, moderation=moderation, config=gate_config
        )
        store.set_watermark(WATERMARK, consumed)
        verdict = "promoted (active)" if result.passed else "rejected"
        return LoraUpdate(
            status="promoted" if result.passed else "rejected",
            message=f"adapter {name} {verdict} by the gate: " + "; ".join(result.reasons),
            adapter=get(store, candidate.id),
            meta=meta,
            gate=result,
            counts=data.counts,
            watermark=consumed,
        )


def _hf_factory(base_model: str, config: LoraTrainConfig) -> BackendFactory:
    def build(adapter: str | None) -> Backend:
        from kuaimod_open.judge.backends.hf import HFBackend

        return HFBackend(
            base_model,
            adapter=adapter,
            device=config.device,
            dtype=config.dtype,
            min_pixels=config.min_pixels,
            max_pixels=config.max_pixels,
        )

    return build


__all__ = [
    "AdapterMeta",
    "BackendFactory",
    "LoraUpdate",
    "gate_adapter",
    "read_meta",
    "run_lock",
    "update_lora",
]
