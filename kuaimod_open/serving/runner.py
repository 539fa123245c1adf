"""Parallel, resumable batch runner for nightly backfills (``kuaimod moderate``, ``eval``, ``cascade``).

Decoding, frame sampling and OCR/ASR run in worker processes while the main process batches the
prepared samples into the judge (the VLM, or the cascade), so CPU preparation overlaps with model
inference. Verdicts go through the one :class:`~kuaimod_open.serving.writer.VerdictWriter`: exactly
once, resumable after a kill at any moment, optionally into the feedback store too. A failing item
(unreadable video, crashed decoder, model error) becomes an error verdict (decision = review) and the
job goes on.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kuaimod_open.errors import ConfigError, KuaimodError
from kuaimod_open.first_stage.match import Judge, vlm_judge
from kuaimod_open.ingest.fetch import FetchPolicy, fetch
from kuaimod_open.ingest.keys import key_for
from kuaimod_open.ingest.manifest import WorkItem
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.backends.base import Backend, WindowedBackend
from kuaimod_open.judge.pipeline import (
    ModelIdentity,
    ModerationConfig,
    PrecedentLookup,
    moderate,
    prepare,
    provenance_for,
)
from kuaimod_open.judge.policy import Policy
from kuaimod_open.judge.prompt import Template
from kuaimod_open.judge.verdict import Stage, error_verdict
from kuaimod_open.serving.writer import JobSummary, VerdictWriter, write_parquet

if TYPE_CHECKING:
    from kuaimod_open.loop.store import Store


@dataclass(frozen=True)
class RunnerConfig:
    """How a job is run (the moderation itself is configured by ModerationConfig)."""

    workers: int = 1  # preparation processes; 0 prepares in the main process (no overlap)
    parquet: Path | None = None  # also write the verdicts as Parquet here at the end
    progress: bool = True
    # Items being prepared ahead of inference; None: enough to keep workers busy during a batch.
    window: int | None = None
    # What URLs in the manifest may be fetched from, and within which limits (kuaimod_open.ingest.fetch).
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    # Samples handed to the judge at once; None: the model's batch size. A router deciding alone scores
    # hundreds at once (its per-call overhead dominates), while a VLM batch bounds what a kill can lose.
    judge_batch: int | None = None


# --------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class Prepared:
    """What a worker sends back: the ready sample, or why it failed."""

    sample_id: str
    sample: Sample | None
    error: str | None
    seconds: float


def prepare_item(item: WorkItem, config: ModerationConfig, fetch_policy: FetchPolicy | None = None) -> Prepared:
    """Fetch (for URLs, under ``fetch_policy``), sample frames and extract text for one item; never raises."""
    started = time.perf_counter()
    sample = item.sample
    try:
        if item.url is not None:
            got = fetch(item.url, config.frames_dir / "_downloads", fetch_policy)
            sample = sample.model_copy(update={"video": got.path, "key": key_for(sample.id, got.content)})
        ready = prepare(sample, config)
        return Prepared(sample.id, ready, None, time.perf_counter() - started)
    except KuaimodError as exc:
        return Prepared(sample.id, None, str(exc), time.perf_counter() - started)
    except Exception as exc:  # a nightly job must survive one file that trips a decoder bug
        return Prepared(sample.id, None, f"{type(exc).__name__}: {str(exc)[:300]}", time.perf_counter() - started)


# --------------------------------------------------------------------------- the job


def run_job(
    items: Sequence[WorkItem],
    policy: Policy,
    backend: Backend | None,
    template: Template,
    out: str | Path,
    config: ModerationConfig | None = None,
    runner: RunnerConfig | None = None,
    *,
    precedents: PrecedentLookup | None = None,
    judge: Judge | None = None,
    store: Store | None = None,
    model: ModelIdentity | None = None,
    desc: str = "moderating",
) -> JobSummary:
    """Moderate ``items`` into ``out`` (JSONL), resuming where an earlier run stopped.

    ``judge`` replaces the VLM call on each prepared batch (e.g. the cascade: the router decides the
    clear cases and calls the VLM for the rest); it must return one verdict per sample, in order.
    Without a ``backend`` (a router deciding alone), ``judge`` is required and ``model`` names what
    decided, for provenance. With ``store``, every prepared sample and verdict is recorded there too.
    """
    out, config, runner = Path(out), config or ModerationConfig(), runner or RunnerConfig()
    # A windowed backend (openai) gets one stream through a sliding window of requests instead of batches.
    stream = backend if judge is None and isinstance(backend, WindowedBackend) else None
    if judge is None:
        if backend is None:
            raise ConfigError("run_job needs a backend or a judge")
        judge = vlm_judge(policy, backend, template, config, precedents)
    identity = backend if backend is not None else model
    if identity is None:
        raise ConfigError("run_job without a backend needs `model` (what decided, for provenance)")
    with VerdictWriter(out, store=store, policy=policy, progress=runner.progress, desc=desc) as writer:
        todo = writer.pending(items, key=lambda item: item.sample.id)
        summary = writer.summary
        summary.workers = runner.workers
        started = time.perf_counter()

        def failed(result: Prepared, raw: Sample) -> None:
            prov = provenance_for(raw, policy, template, identity, config)
            reason = result.error or "preparation failed"
            writer.write(error_verdict(raw.id, reason, prov, stage=Stage.PIPELINE), raw)

        if stream is not None:
            # A continuously batching server never waits for the slowest answer of a batch; preparation
            # feeds the window as it frees up.
            infer_config = dataclasses.replace(config, extract=None, hashing=None)
            waiting = 0.0
            in_hand: dict[str, Sample] = {}

            def ready_samples() -> Iterator[Sample]:
                nonlocal waiting
                prepared = _prepared(todo, config, runner)
                while True:
                    t0 = time.perf_counter()
                    item_result = next(prepared, None)
                    waiting += time.perf_counter() - t0
                    if item_result is None:
                        return
                    item, result = item_result
                    summary.prepare_seconds += result.seconds
                    if result.sample is None:
                        failed(result, item.sample)
                        continue
                    in_hand[result.sample.id] = result.sample
                    yield result.sample

            t_stream = time.perf_counter()
            for verdict in moderate(ready_samples(), policy, stream, template, infer_config, precedents=precedents):
                writer.write(verdict, in_hand.pop(verdict.sample_id, None))
            summary.inference_seconds += time.perf_counter() - t_stream - waiting
        else:

            def infer(batch: list[Sample]) -> None:
                t0 = time.perf_counter()
                verdicts = judge(batch)
                if [v.sample_id for v in verdicts] != [x.id for x in batch]:
                    raise KuaimodError("the judge must return one verdict per sample, in input order")
                summary.inference_seconds += time.perf_counter() - t0
                for sample, verdict in zip(batch, verdicts, strict=True):
                    writer.write(verdict, sample)

            batch_size = runner.judge_batch or max(1, config.generate.batch_size)
            ready: list[Sample] = []
            for item, result in _prepared(todo, config, runner):
                summary.prepare_seconds += result.seconds
                if result.sample is None:
                    failed(result, item.sample)
                    continue
                ready.append(result.sample)
                if len(ready) >= batch_size:
                    infer(ready)
                    ready = []
            if ready:
                infer(ready)
        summary.seconds = time.perf_counter() - started
    if runner.parquet is not None:
        write_parquet(out, runner.parquet)
    writer.write_manifest(identity.model_id, identity.adapter, policy, template, runner.parquet)
    return summary


def _prepared(
    todo: Sequence[WorkItem], config: ModerationConfig, runner: RunnerConfig
) -> Iterator[tuple[WorkItem, Prepared]]:
    """Prepared items as they complete; in worker processes unless ``workers == 0``."""
    if runner.workers <= 0:
        for item in todo:
            yield item, prepare_item(item, config, runner.fetch)
        return
    window = runner.window or 2 * (runner.workers + max(1, config.generate.batch_size))
    queue = list(reversed(todo))
    attempts: dict[str, int] = {}
    while queue:
        # spawn, not fork: the main process may hold torch/CUDA state that must not be forked.
        import multiprocessing

        pool = ProcessPoolExecutor(runner.workers, mp_context=multiprocessing.get_context("spawn"))
        pending: dict[Future[Prepared], WorkItem] = {}
        crashed: list[WorkItem] = []
        try:
            while (queue or pending) and not crashed:
                while queue and len(pending) < window:
                    item = queue.pop()
                    pending[pool.submit(prepare_item, item, config, runner.fetch)] = item
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    item = pending.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        crashed.append(item)
                        continue
                    yield item, result
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        # A worker died (e.g. a decoder segfault). Items in flight are retried once in a fresh pool;
        # an item in flight during a second crash is the likely culprit and is failed.
        for item in [*crashed, *pending.values()]:
            attempts[item.sample.id] = attempts.get(item.sample.id, 0) + 1
            if attempts[item.sample.id] >= 2:
                yield item, Prepared(item.sample.id, None, "a worker process crashed while preparing it", 0.0)
            else:
                queue.append(item)


__all__ = ["Judge", "Prepared", "RunnerConfig", "prepare_item", "run_job"]
