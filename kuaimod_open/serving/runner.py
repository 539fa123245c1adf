"""Parallel, resumable batch runner for nightly backfills (``kuaimod moderate``, ``eval``, ``cascade``).

Decoding, frame sampling and OCR/ASR run in worker processes while the main process batches the
prepared samples into the judge (the VLM, or the cascade), so CPU preparation overlaps with model
inference. Verdicts go through the one :class:`~kuaimod_open.serving.writer.VerdictWriter`: exactly
once, resumable after a kill at any moment, optionally into the feedback store too. A failing item
(unreadable video, crashed decoder, model error) becomes an error verdict (decision = review) and the
job goes on.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kuaimod_open.errors import ConfigError, KuaimodError
from kuaimod_open.first_stage.match import Judge, vlm_judge
from kuaimod_open.ingest.keys import key_for, safe_suffix, stored_name
from kuaimod_open.ingest.manifest import WorkItem
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.backends.base import Backend
from kuaimod_open.judge.pipeline import ModelIdentity, ModerationConfig, PrecedentLookup, prepare, provenance_for
from kuaimod_open.judge.policy import Policy
from kuaimod_open.judge.prompt import Template
from kuaimod_open.judge.verdict import Stage, error_verdict
from kuaimod_open.serving.writer import JobSummary, VerdictWriter, write_parquet

if TYPE_CHECKING:
    from kuaimod_open.loop.store import Store

# A remote video larger than this is refused rather than filling the disk (override per job).
MAX_DOWNLOAD_BYTES = 2 << 30


@dataclass(frozen=True)
class RunnerConfig:
    """How a job is run (the moderation itself is configured by ModerationConfig)."""

    workers: int = 1  # preparation processes; 0 prepares in the main process (no overlap)
    parquet: Path | None = None  # also write the verdicts as Parquet here at the end
    progress: bool = True
    # Items being prepared ahead of inference; None: enough to keep workers busy during a batch.
    window: int | None = None
    max_download_bytes: int = MAX_DOWNLOAD_BYTES
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


def fetch(url: str, folder: Path, max_bytes: int = MAX_DOWNLOAD_BYTES, timeout: float = 60.0) -> tuple[Path, str]:
    """Download ``url`` into ``folder``, named by its content (:func:`kuaimod_open.ingest.keys.stored_name`).

    Returns the file and its sha256. The bytes go to a private temporary file first and are renamed
    into place, so concurrent downloads never see each other's partial files; identical content is
    stored once. Files larger than ``max_bytes`` are refused.
    """
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".part-")
    tmp = Path(tmp_name)
    got, h = 0, hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, os.fdopen(fd, "wb") as out:  # noqa: S310 (schemes checked)
            while chunk := response.read(1 << 20):
                got += len(chunk)
                if got > max_bytes:
                    raise KuaimodError(f"{url}: larger than the {max_bytes} byte limit")
                h.update(chunk)
                out.write(chunk)
        dst = folder / stored_name(h.hexdigest(), safe_suffix(url.split("?")[0]) or ".mp4")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst, h.hexdigest()


def prepare_item(item: WorkItem, config: ModerationConfig, max_download_bytes: int = MAX_DOWNLOAD_BYTES) -> Prepared:
    """Fetch (for URLs), sample frames and extract text for one item; never raises."""
    started = time.perf_counter()
    sample = item.sample
    try:
        if item.url is not None:
            video, content = fetch(item.url, config.frames_dir / "_downloads", max_download_bytes)
            sample = sample.model_copy(update={"video": video, "key": key_for(sample.id, content)})
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
                prov = provenance_for(item.sample, policy, template, identity, config)
                reason = result.error or "preparation failed"
                writer.write(error_verdict(item.sample.id, reason, prov, stage=Stage.PIPELINE), item.sample)
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
            yield item, prepare_item(item, config, runner.max_download_bytes)
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
                    pending[pool.submit(prepare_item, item, config, runner.max_download_bytes)] = item
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


__all__ = ["Judge", "Prepared", "RunnerConfig", "fetch", "prepare_item", "run_job"]
