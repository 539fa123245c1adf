"""``--engine ray``: the batch job as a Ray Data pipeline, for clusters (or one big machine).

    items ─► map(prepare)            CPU tasks: fetch, decode, sample frames, OCR/ASR
          ─► map_batches(ModelActor)  an actor pool; each actor loads the backend once (GPUs here)
          ─► driver                   writes verdict lines (the same exactly-once JSONL as the local runner)

Ray schedules, retries and streams; nothing here is home-made cluster code. The driver keeps the
output semantics of :mod:`kuaimod_open.serving.runner`: an exclusive lock on the output, ids already
written are skipped, one fsynced line per verdict. Point it at a cluster with ``--ray-address``
(or ``RAY_ADDRESS``); without one a local Ray instance is started.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kuaimod_open._lazy import require
from kuaimod_open.first_stage.cascade import FirstStage, cascade_judge
from kuaimod_open.first_stage.match import MatchStage, matching_judge, vlm_judge
from kuaimod_open.ingest.fetch import FetchPolicy
from kuaimod_open.ingest.manifest import WorkItem
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.backends import get_backend
from kuaimod_open.judge.backends.base import Backend
from kuaimod_open.judge.pipeline import ModerationConfig, completed_ids, moderate, provenance_for
from kuaimod_open.judge.policy import Policy
from kuaimod_open.judge.prompt import Template
from kuaimod_open.judge.verdict import Stage, Verdict, error_verdict
from kuaimod_open.serving.runner import (
    JobSummary,
    RunnerConfig,
    locked_output,
    prepare_item,
    write_job_manifest,
    write_parquet,
)


@dataclass(frozen=True)
class BackendSpec:
    """How to build a backend inside a Ray actor (a built model cannot be shipped to another machine)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Backend:
        """Construct the backend."""
        return get_backend(self.name, **self.options)


@dataclass(frozen=True)
class RayConfig:
    """Where and how wide the Ray pipeline runs."""

    address: str | None = None  # None: $RAY_ADDRESS, else a local instance
    num_cpus: int | None = None  # for a local instance; None: all cores
    model_actors: int = 1  # actors holding a model replica
    gpus_per_actor: float = 0.0  # e.g. 1 for one GPU per replica
    cpus_per_task: float = 1.0  # per preparation task


def _prepare_row(row: dict[str, Any], config: ModerationConfig, fetch_policy: FetchPolicy) -> dict[str, Any]:
    item = WorkItem(Sample.model_validate_json(row["sample"]), url=row["url"] or None)
    result = prepare_item(item, config, fetch_policy)
    return {
        "sample": (result.sample or item.sample).model_dump_json(),
        "error": result.error or "",
        "seconds": result.seconds,
    }


class ModelActor:
    """Holds one backend replica; judges batches of prepared rows (error rows become error verdicts)."""

    def __init__(
        self,
        spec: BackendSpec,
        policy: Policy,
        template: Template,
        config: ModerationConfig,
        first_stage: FirstStage | None = None,
        match: MatchStage | None = None,
    ) -> None:
        self.backend, self.policy, self.template = spec.build(), policy, template
        self.config = dataclasses.replace(config, extract=None, hashing=None)  # rows arrive prepared
        self.judge: Callable[[list[Sample]], list[Verdict]] | None = None
        if first_stage is not None:
            self.judge = cascade_judge(first_stage.load(), policy, self.backend, template, self.config)
        if match is not None:  # the hash bank first: a banked re-upload never reaches the model
            inner = self.judge or vlm_judge(policy, self.backend, template, self.config)
            self.judge = matching_judge(match, inner)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """One batch of rows in, one verdict JSON line per row out."""
        samples = [Sample.model_validate_json(str(s)) for s in batch["sample"]]
        errors = [str(e) for e in batch["error"]]
        good = [s for s, e in zip(samples, errors, strict=True) if not e]
        if self.judge is not None:
            judged = iter(self.judge(good))
        else:
            judged = iter(moderate(good, self.policy, self.backend, self.template, self.config))
        out: list[str] = []
        for sample, error in zip(samples, errors, strict=True):
            if error:
                prov = provenance_for(sample, self.policy, self.template, self.backend, self.config)
                out.append(error_verdict(sample.id, error, prov, stage=Stage.PIPELINE).model_dump_json())
            else:
                out.append(next(judged).model_dump_json())
        # The prepared samples go back too, so the driver can record them (frames, OCR/ASR) in a store.
        return {"verdict": out, "seconds": list(batch["seconds"]), "sample": [str(x) for x in batch["sample"]]}


def run_ray_job(
    items: Sequence[WorkItem],
    policy: Policy,
    template: Template,
    spec: BackendSpec,
    out: str | Path,
    config: ModerationConfig | None = None,
    runner: RunnerConfig | None = None,
    ray_config: RayConfig | None = None,
    first_stage: FirstStage | None = None,
    *,
    match: MatchStage | None = None,
    on_sample: Callable[[Sample], None] | None = None,
    on_verdict: Callable[[Verdict], None] | None = None,
) -> JobSummary:
    """Moderate ``items`` into ``out`` with Ray Data; resumable exactly like :func:`runner.run_job`.

    With ``first_stage``, each model actor runs the cascade: the router decides the clear cases and
    only the rest reach the actor's model. With ``match`` (a snapshot of the hash bank), each actor
    decides banked re-uploads first, without the model. ``on_sample`` / ``on_verdict`` run in the driver for every
    prepared sample and written verdict (e.g. to record both in the feedback store).
    """
    ray = require("ray", extra="ray", purpose="--engine ray")
    out, config = Path(out), config or ModerationConfig()
    runner, ray_config = runner or RunnerConfig(), ray_config or RayConfig()
    with locked_output(out) as handle:
        done = completed_ids(out)
        todo = [item for item in items if item.sample.id not in done]
        summary = JobSummary(total=len(items), skipped=len(items) - len(todo), engine="ray")
        started = time.perf_counter()
        if todo:
            if not ray.is_initialized():
                ray.init(
                    address=ray_config.address or os.environ.get("RAY_ADDRESS"),
                    num_cpus=ray_config.num_cpus,
                    include_dashboard=False,
                    log_to_driver=False,
                )
            ray.data.DataContext.get_current().enable_progress_bars = runner.progress
            rows = [{"sample": i.sample.model_dump_json(), "url": i.url or ""} for i in todo]
            ds = ray.data.from_items(rows).map(
                _prepare_row,
                fn_kwargs={"config": config, "fetch_policy": runner.fetch},
                num_cpus=ray_config.cpus_per_task,
            )
            ds = ds.map_batches(
                ModelActor,
                fn_constructor_kwargs={
                    "spec": spec,
                    "policy": policy,
                    "template": template,
                    "config": config,
                    "first_stage": first_stage,
                    "match": match,
                },
                batch_size=max(1, config.generate.batch_size),
                concurrency=ray_config.model_actors,
                num_gpus=ray_config.gpus_per_actor,
                batch_format="numpy",
            )
            for row in ds.iter_rows():
                verdict = Verdict.model_validate_json(row["verdict"])
                # Written by the driver only: one writer, so the exactly-once file logic is unchanged.
                if on_sample is not None:
                    on_sample(Sample.model_validate_json(row["sample"]))
                handle.write(verdict.model_dump_json() + "\n")
                handle.flush()
                os.fsync(handle.fileno())
                summary.add(verdict)
                summary.prepare_seconds += float(row["seconds"])
                if on_verdict is not None:
                    on_verdict(verdict)
        summary.seconds = time.perf_counter() - started
    if runner.parquet is not None:
        write_parquet(out, runner.parquet)
    model = str(spec.options.get("model") or spec.options.get("model_id") or spec.name)
    write_job_manifest(out, summary, model, spec.options.get("adapter"), policy, template, runner)
    return summary
