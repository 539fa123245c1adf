"""Pipeline: samples → frames → prompts → batched generation → verdicts, and resumable batch runs.

``moderate`` is the whole judging loop as a generator; ``run_batch`` wraps it with an append-only
JSONL output that is flushed per verdict, skips sample ids already written (resume), and writes a
manifest with counts and timings at the end.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

from kuaimod_open import __version__
from kuaimod_open.errors import ConfigError, KuaimodError
from kuaimod_open.ingest.extract import ExtractConfig
from kuaimod_open.ingest.frames import sample_frames_keyed
from kuaimod_open.ingest.keys import sample_key
from kuaimod_open.ingest.pdq import HashConfig
from kuaimod_open.ingest.sample import DEFAULT_FRAMES, DEFAULT_MAX_SIDE, Sample, SamplingMode
from kuaimod_open.judge.backends.base import Backend, GenerateConfig, Generation, Request, WindowedBackend
from kuaimod_open.judge.confidence import ConfidenceCalibration, category_confidence
from kuaimod_open.judge.flags import Flag
from kuaimod_open.judge.injection import detect, flags_for
from kuaimod_open.judge.policy import Decision, Policy
from kuaimod_open.judge.prompt import PromptLimits, Template, build_messages
from kuaimod_open.judge.verdict import ParseStatus, Provenance, Stage, Verdict, error_verdict, parse_verdict


@dataclass(frozen=True)
class ModerationConfig:
    """How samples are prepared and judged."""

    frames: int = DEFAULT_FRAMES
    max_side: int = DEFAULT_MAX_SIDE
    sampling: SamplingMode = SamplingMode.UNIFORM
    frames_dir: Path = Path(".kuaimod/frames")
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    limits: PromptLimits = field(default_factory=PromptLimits)
    # OCR/ASR for raw videos whose text fields are empty (kuaimod_open.ingest.extract); None: off.
    extract: ExtractConfig | None = None
    # Maps token confidence to a calibrated probability (kuaimod calibrate-confidence); needs logprobs on.
    confidence_calibration: ConfidenceCalibration | None = None
    # PDQ frame hashes for the hash bank's match stage (kuaimod_open.ingest.pdq); None: not hashed.
    hashing: HashConfig | None = None


class ShownPrecedents(Protocol):
    """Precedents rendered for one prompt and their ids (e.g. :class:`kuaimod_open.loop.precedents.Shown`)."""

    @property
    def text(self) -> str: ...  # noqa: D102

    @property
    def ids(self) -> Sequence[str]: ...  # noqa: D102


# Returns the "similar decided cases" block for a sample: plain text, or text plus the ids of the
# precedents shown (recorded in the verdict so every decision says which case law it saw).
PrecedentLookup = Callable[[Sample], "str | ShownPrecedents"]


def prepare(sample: Sample, config: ModerationConfig) -> Sample:
    """Key the sample, then sample frames (and OCR/ASR text when configured) for a video-backed Sample.

    The key (id + content, :mod:`kuaimod_open.ingest.keys`) names the frame folder and goes into
    the verdict's provenance; a sample without a video is keyed and otherwise passed through.
    """
    key = sample.key if sample.key is not None and sample.key.id == sample.id else sample_key(sample)
    sample = sample.model_copy(update={"key": key})
    if sample.video is None:
        return sample
    if not sample.frames:
        frames = sample_frames_keyed(
            sample.video,
            config.frames_dir,
            key,
            config.frames,
            max_side=config.max_side,
            mode=config.sampling,
        )
        sample = sample.model_copy(update={"frames": frames})
    if config.hashing is not None and sample.hashes is None and sample.video is not None:
        from kuaimod_open.ingest.pdq import hash_video

        sample = sample.model_copy(update={"hashes": hash_video(sample.video, config.hashing)})
    if config.extract is not None:
        from kuaimod_open.ingest.extract import fill_text

        sample = fill_text(sample, config.extract)
    return sample


def provenance_for(
    sample: Sample, policy: Policy, template: Template, backend: Backend, config: ModerationConfig
) -> Provenance:
    """The provenance record of a verdict about ``sample``."""
    return Provenance(
        model=backend.model_id,
        adapter=backend.adapter,
        policy_version=policy.version,
        policy_digest=policy.digest,
        prompt_digest=template.digest,
        generate_digest=config.generate.digest(),
        calibration_digest=config.confidence_calibration.digest if config.confidence_calibration else None,
        frame_timestamps=sample.timestamps,
        sample_key=sample.key.digest if sample.key else None,
        content_digest=sample.key.content if sample.key else None,
        package_version=__version__,
    )


def moderate(
    samples: Iterable[Sample],
    policy: Policy,
    backend: Backend,
    template: Template,
    config: ModerationConfig | None = None,
    *,
    precedents: PrecedentLookup | None = None,
) -> Iterator[Verdict]:
    """Judge every sample; yields exactly one verdict per sample, in input order.

    A sample whose video cannot be read, or whose generation failed, yields an error verdict
    (decision = review) and the run goes on. ``samples`` is read lazily: a backend that takes one
    request at a time (:class:`WindowedBackend`, e.g. ``openai``) gets a sliding window of requests
    in flight over the whole stream; others get batches of ``generate.batch_size``.
    """
    config = config or ModerationConfig()
    if isinstance(backend, WindowedBackend):
        yield from _moderate_windowed(samples, policy, backend, template, config, precedents)
        return
    iterator = iter(samples)
    while batch := list(islice(iterator, max(1, config.generate.batch_size))):
        yield from _moderate_batch(batch, policy, backend, template, config, precedents)


@dataclass(frozen=True)
class _Job:
    """A prepared sample waiting for the model's answer."""

    sample: Sample
    provenance: Provenance
    request: Request
    injection: list[str]
    precedent_ids: list[str]


def _start(
    raw: Sample,
    policy: Policy,
    backend: Backend,
    template: Template,
    config: ModerationConfig,
    precedents: PrecedentLookup | None,
) -> _Job | Verdict:
    """Prepare a sample and render its prompt; an expected per-item failure is its error verdict at once."""
    try:
        sample = prepare(raw, config)
        injection = flags_for(detect(sample))
        shown = precedents(sample) if precedents else ""
        shown_ids: list[str] = []
        if not isinstance(shown, str):
            shown_ids = list(shown.ids)
            shown = shown.text
        messages = build_messages(sample, policy, template, precedents=shown, limits=config.limits)
    except KuaimodError as exc:  # expected per-item failures: unreadable video, missing dependency...
        prov = provenance_for(raw, policy, template, backend, config)
        return error_verdict(raw.id, str(exc), prov, stage=Stage.PIPELINE)
    prov = provenance_for(sample, policy, template, backend, config)
    return _Job(sample, prov, Request(sample.id, messages), injection, shown_ids)


def _finish(job: _Job, gen: Generation, policy: Policy, config: ModerationConfig) -> Verdict:
    """The verdict of one answered job."""
    sample, prov = job.sample, job.provenance
    if gen.error is not None:
        verdict = error_verdict(sample.id, gen.error, prov)
    elif gen.truncated:
        verdict = truncated_verdict(sample.id, gen.text, config.generate.max_new_tokens, prov)
    else:
        verdict = parse_verdict(gen.text, policy, sample, prov)
    if job.injection:
        # Text that tries to steer the judge is evidence of manipulation: a human decides.
        verdict = verdict.model_copy(update={"decision": Decision.REVIEW, "flags": [*verdict.flags, *job.injection]})
    token_confidence = category_confidence(gen.token_logprobs, gen.text, verdict)
    calibration = config.confidence_calibration
    calibrated = calibration.apply(token_confidence) if calibration else None
    too_unsure = calibrated is not None and calibrated < policy.min_confidence
    if too_unsure and verdict.decision is not Decision.REVIEW:
        # A measured probability of being right below the policy's bar outranks the number the
        # model wrote about itself: a person decides.
        verdict = verdict.model_copy(
            update={"decision": Decision.REVIEW, "flags": [*verdict.flags, Flag.LOW_CALIBRATED_CONFIDENCE]}
        )
    return verdict.model_copy(
        update={
            "latency_s": gen.latency_s,
            "input_tokens": gen.input_tokens,
            "output_tokens": gen.output_tokens,
            "precedents": job.precedent_ids,
            "token_confidence": token_confidence,
            "calibrated_confidence": calibrated,
        }
    )


def truncated_verdict(sample_id: str, text: str, max_new_tokens: int, provenance: Provenance) -> Verdict:
    """A verdict for an answer cut off at ``max_new_tokens``: an error, decision review, the text kept for a person.

    An unfinished chain of thought is never parsed: a line like "candidate category: HATE" in the middle
    of the reasoning is not a conclusion, and a half-written JSON object is not a verdict.
    """
    verdict = error_verdict(
        sample_id,
        f"the answer hit max_new_tokens={max_new_tokens} before it ended; raise --max-new-tokens",
        provenance,
    )
    return verdict.model_copy(
        update={"flags": [*verdict.flags, Flag.TRUNCATED_ANSWER], "raw_output": text, "rationale": text.strip()}
    )


def _moderate_batch(
    batch: Sequence[Sample],
    policy: Policy,
    backend: Backend,
    template: Template,
    config: ModerationConfig,
    precedents: PrecedentLookup | None,
) -> list[Verdict]:
    started = [_start(raw, policy, backend, template, config, precedents) for raw in batch]
    jobs = [s for s in started if isinstance(s, _Job)]
    finished: Iterator[Verdict] = iter(())
    if jobs:
        generations = backend.generate([j.request for j in jobs], config.generate)
        if len(generations) != len(jobs):
            raise KuaimodError(
                f"backend {backend.model_id} returned {len(generations)} answers for {len(jobs)} requests"
            )
        finished = iter([_finish(j, g, policy, config) for j, g in zip(jobs, generations, strict=True)])
    return [s if isinstance(s, Verdict) else next(finished) for s in started]


def _moderate_windowed(
    samples: Iterable[Sample],
    policy: Policy,
    backend: WindowedBackend,
    template: Template,
    config: ModerationConfig,
    precedents: PrecedentLookup | None,
) -> Iterator[Verdict]:
    """Keep ``backend.window`` requests in flight; yield verdicts in input order as the head finishes.

    Answers that finish before the head are held back (at most ``4 x window`` samples in hand), so a
    slow request delays what is yielded, never what is sent, until the hold-back is full.
    """
    window = max(1, backend.window)
    holdback = 4 * window
    iterator = iter(samples)
    queue: deque[Verdict | tuple[_Job, Future[Generation]]] = deque()
    exhausted = False

    def in_flight() -> list[Future[Generation]]:
        return [entry[1] for entry in queue if isinstance(entry, tuple) and not entry[1].done()]

    pool = ThreadPoolExecutor(max_workers=window, thread_name_prefix="kuaimod-window")
    try:
        while True:
            while not exhausted and len(in_flight()) < window and len(queue) < holdback:
                raw = next(iterator, None)
                if raw is None:
                    exhausted = True
                    break
                started = _start(raw, policy, backend, template, config, precedents)
                if isinstance(started, Verdict):
                    queue.append(started)
                else:
                    queue.append((started, pool.submit(backend.generate_one, started.request, config.generate)))
            if not queue:
                return
            head = queue[0]
            if isinstance(head, Verdict):
                queue.popleft()
                yield head
                continue
            job, future = head
            if not future.done():
                wait(in_flight(), return_when=FIRST_COMPLETED)
                continue
            queue.popleft()
            try:
                gen = future.result()
            except Exception as exc:  # generate_one should not raise; one request must not sink the job
                gen = Generation(error=f"{type(exc).__name__}: {exc}"[:500])
            yield _finish(job, gen, policy, config)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- batch runs


@dataclass
class RunSummary:
    """Counts and timings of one batch run (also written as the run's manifest)."""

    total: int = 0
    skipped: int = 0
    written: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    stages: Counter[str] = field(default_factory=Counter)
    errors: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, verdict: Verdict) -> None:
        """Count one written verdict."""
        self.written += 1
        self.decisions[str(verdict.decision)] += 1
        self.categories[verdict.category or "-"] += 1
        self.statuses[str(verdict.status)] += 1
        self.stages[str(verdict.stage)] += 1
        if verdict.status is ParseStatus.ERROR:
            self.errors.append({"sample_id": verdict.sample_id, "error": verdict.error or ""})

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "total": self.total,
            "skipped_already_done": self.skipped,
            "written": self.written,
            "decisions": dict(self.decisions),
            "categories": dict(self.categories),
            "statuses": dict(self.statuses),
            "stages": dict(self.stages),
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "samples_per_second": round(self.written / self.seconds, 3) if self.seconds > 0 else None,
        }


def completed_ids(out: Path) -> set[str]:
    """Sample ids already in a verdict file. A torn last line (a killed run) is cut off first."""
    if not out.exists():
        return set()
    _drop_torn_tail(out)
    done: set[str] = set()
    with out.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                done.add(json.loads(line)["sample_id"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ConfigError(f"{out}:{number} is not a verdict line; refusing to append to this file") from None
    return done


def _drop_torn_tail(out: Path) -> None:
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        # Truncate in place: rewriting the file would lose every verdict if killed mid-write.
        os.truncate(out, data.rfind(b"\n") + 1)


def run_batch(
    samples: Sequence[Sample],
    policy: Policy,
    backend: Backend,
    template: Template,
    out: str | Path,
    config: ModerationConfig | None = None,
    *,
    precedents: PrecedentLookup | None = None,
    progress: bool = True,
    on_verdict: Callable[[Verdict], None] | None = None,
) -> RunSummary:
    """Moderate ``samples`` into the JSONL file ``out``, resuming where an earlier run stopped."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = completed_ids(out)
    todo = [s for s in samples if s.id not in done]
    summary = RunSummary(total=len(samples), skipped=len(samples) - len(todo))
    started = time.perf_counter()
    bar = _progress(len(todo), progress)
    with out.open("a", encoding="utf-8") as handle:
        for verdict in moderate(todo, policy, backend, template, config, precedents=precedents):
            # One line per verdict, flushed at once: a killed run loses at most the line in flight.
            handle.write(verdict.model_dump_json() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            summary.add(verdict)
            if on_verdict is not None:
                on_verdict(verdict)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    summary.seconds = time.perf_counter() - started
    manifest = {
        "summary": summary.as_dict(),
        "model": backend.model_id,
        "adapter": backend.adapter,
        "policy_version": policy.version,
        "policy_digest": policy.digest,
        "prompt_digest": template.digest,
        "package_version": __version__,
    }
    manifest_path = out.with_name(out.name + ".manifest.json")
    manifest_path.write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
    return summary


def _progress(total: int, enabled: bool) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="video", desc="moderating", dynamic_ncols=True)
