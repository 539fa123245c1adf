"""Parallel, resumable batch runner for nightly backfills.

Decoding, frame sampling and OCR/ASR run in worker processes while the main process batches the
prepared samples into the backend, so CPU preparation overlaps with model inference.

Exactly-once output: verdicts go to an append-only JSONL file, one line per verdict, flushed and
fsynced before the next is written, under an exclusive lock on ``<out>.lock`` (two jobs can never
write the same file). On start, a torn last line from a killed run is truncated away and every id
already in the file is skipped. A job killed at any moment therefore loses no finished verdict and
never writes one twice. A failing item (unreadable video, crashed decoder, model error) becomes an
error verdict (decision = review) and the job goes on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel

from kuaimod_open import __version__
from kuaimod_open._lazy import require
from kuaimod_open.errors import ConfigError, KuaimodError
from kuaimod_open.ingest.fetch import FetchPolicy, fetch
from kuaimod_open.ingest.keys import key_for
from kuaimod_open.ingest.manifest import WorkItem
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.backends.base import Backend, WindowedBackend
from kuaimod_open.judge.pipeline import (
    ModerationConfig,
    PrecedentLookup,
    RunSummary,
    completed_ids,
    moderate,
    prepare,
    provenance_for,
)
from kuaimod_open.judge.policy import Policy
from kuaimod_open.judge.prompt import Template
from kuaimod_open.judge.verdict import Stage, Verdict, error_verdict

# Judges a batch of prepared samples (frames and text in place): one verdict per sample, in order.
Judge = Callable[[list[Sample]], list[Verdict]]


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


@dataclass
class JobSummary(RunSummary):
    """RunSummary plus where the time went."""

    workers: int = 0
    engine: str = "local"
    prepare_seconds: float = 0.0  # summed over workers
    inference_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = super().as_dict()
        out.update(
            workers=self.workers,
            engine=self.engine,
            prepare_seconds=round(self.prepare_seconds, 3),
            inference_seconds=round(self.inference_seconds, 3),
        )
        return out


class JobManifest(BaseModel):
    """``<out>.manifest.json``: what the last run of a job did and with what."""

    summary: dict[str, Any]
    model: str
    adapter: str | None
    policy_version: str
    policy_digest: str
    prompt_digest: str
    package_version: str
    out: str
    parquet: str | None = None


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


# --------------------------------------------------------------------------- output


@contextmanager
def locked_output(out: Path) -> Iterator[TextIO]:
    """Open ``out`` for appending under an exclusive lock; a second job on the same file fails at once."""
    import fcntl

    out.parent.mkdir(parents=True, exist_ok=True)
    with out.with_name(out.name + ".lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"Another job is writing {out}; wait for it or choose another --out") from None
        with out.open("a", encoding="utf-8") as handle:
            yield handle


def write_parquet(jsonl: Path, dst: Path) -> Path:
    """A Parquet copy of a verdict file: flat columns plus the full verdict as JSON text."""
    pa = require("pyarrow", extra="batch", purpose="writing Parquet verdict files")
    pq = require("pyarrow.parquet", extra="batch", purpose="writing Parquet verdict files", package="pyarrow")
    rows = []
    for line in jsonl.read_text(encoding="utf-8").splitlines():
        if line.strip():
            v = json.loads(line)
            rows.append(
                {
                    **{k: v.get(k) for k in ("sample_id", "decision", "category", "tag", "confidence", "status")},
                    **{k: v.get(k) for k in ("stage", "error", "latency_s", "summary")},
                    "other_categories": v.get("other_categories") or [],
                    "created_at": v.get("provenance", {}).get("created_at"),
                    "verdict_json": line,
                }
            )
    tmp = dst.with_name(dst.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    os.replace(tmp, dst)  # readers see the old or the new file, never half of one
    return dst


# --------------------------------------------------------------------------- the job


def run_job(
    items: Sequence[WorkItem],
    policy: Policy,
    backend: Backend,
    template: Template,
    out: str | Path,
    config: ModerationConfig | None = None,
    runner: RunnerConfig | None = None,
    *,
    precedents: PrecedentLookup | None = None,
    on_verdict: Callable[[Verdict], None] | None = None,
    on_sample: Callable[[Sample], None] | None = None,
    judge: Judge | None = None,
) -> JobSummary:
    """Moderate ``items`` into ``out`` (JSONL), resuming where an earlier run stopped.

    ``on_sample`` sees every prepared sample before it is judged, ``on_verdict`` every verdict
    after it is written (e.g. to record both in the feedback store). ``judge`` replaces the VLM call
    on each prepared batch (e.g. the cascade: the router decides the clear cases and calls the VLM
    for the rest); it must return one verdict per sample, in order.
    """
    out, config, runner = Path(out), config or ModerationConfig(), runner or RunnerConfig()
    ids = [item.sample.id for item in items]
    if len(set(ids)) != len(ids):
        raise ConfigError("Duplicate sample ids in the job: ids must be unique so the job can resume")
    with locked_output(out) as handle:
        done = completed_ids(out)
        todo = [item for item in items if item.sample.id not in done]
        summary = JobSummary(total=len(items), skipped=len(items) - len(todo), workers=runner.workers)
        # Prepared samples already carry frames and text: inference must not extract again.
        infer_config = dataclasses.replace(config, extract=None, hashing=None)
        started = time.perf_counter()
        bar = _progress(len(todo), runner.progress)

        def emit(verdict: Verdict) -> None:
            # One line per verdict, flushed and synced at once: a kill loses at most the line in flight.
            handle.write(verdict.model_dump_json() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            summary.add(verdict)
            if on_verdict is not None:
                on_verdict(verdict)
            if bar is not None:
                bar.update(1)

        def infer(batch: list[Sample]) -> None:
            if on_sample is not None:  # prepared samples (frames, OCR/ASR) for the feedback store
                for sample in batch:
                    on_sample(sample)
            t0 = time.perf_counter()
            if judge is not None:
                verdicts = judge(batch)
                if [v.sample_id for v in verdicts] != [x.id for x in batch]:
                    raise KuaimodError("the judge must return one verdict per sample, in input order")
            else:
                verdicts = list(moderate(batch, policy, backend, template, infer_config, precedents=precedents))
            summary.inference_seconds += time.perf_counter() - t0
            for verdict in verdicts:
                emit(verdict)

        def failed(result: Prepared, raw: Sample) -> None:
            prov = provenance_for(raw, policy, template, backend, config)
            emit(error_verdict(raw.id, result.error or "preparation failed", prov, stage=Stage.PIPELINE))

        if judge is None and isinstance(backend, WindowedBackend):
            # One stream through a sliding window of requests (a continuously batching server never
            # waits for the slowest answer of a batch); preparation feeds it as the window frees up.
            waiting = 0.0

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
                    if on_sample is not None:
                        on_sample(result.sample)
                    yield result.sample

            t_stream = time.perf_counter()
            for verdict in moderate(ready_samples(), policy, backend, template, infer_config, precedents=precedents):
                emit(verdict)
            summary.inference_seconds += time.perf_counter() - t_stream - waiting
        else:
            batch_size = max(1, config.generate.batch_size)
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
        if bar is not None:
            bar.close()
        summary.seconds = time.perf_counter() - started
    if runner.parquet is not None:
        write_parquet(out, runner.parquet)
    write_job_manifest(out, summary, backend.model_id, backend.adapter, policy, template, runner)
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


def write_job_manifest(
    out: Path,
    summary: JobSummary,
    model: str,
    adapter: str | None,
    policy: Policy,
    template: Template,
    runner: RunnerConfig,
) -> None:
    """Write ``<out>.manifest.json`` (atomically): the run's summary and what it ran with."""
    manifest = JobManifest(
        summary=summary.as_dict(),
        model=model,
        adapter=adapter,
        policy_version=policy.version,
        policy_digest=policy.digest,
        prompt_digest=template.digest,
        package_version=__version__,
        out=str(out),
        parquet=str(runner.parquet) if runner.parquet else None,
    )
    path = out.with_name(out.name + ".manifest.json")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    os.replace(tmp, path)


def _progress(total: int, enabled: bool) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="video", desc="moderating", dynamic_ncols=True, smoothing=0.1)


__all__ = ["JobManifest", "JobSummary", "Prepared", "RunnerConfig", "prepare_item", "run_job", "write_parquet"]
