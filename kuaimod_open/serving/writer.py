"""The one writer of verdicts: every path that produces them (moderate, eval, cascade, Ray, serve) uses it.

Exactly once, whatever kills the process:

* the output is an append-only JSONL file, one line per verdict, flushed and fsynced before the next;
* an exclusive lock on ``<out>.lock`` is held while it is open, so two jobs (or two servers) can never
  write the same file;
* on open, a torn last line left by a kill is truncated away and the ids already written are read,
  so a re-run skips them (batch jobs) and a verdict is never written twice;
* with a feedback store, the prepared sample is recorded before the line is written and the verdict
  right after it; a kill between the two is repaired on the next open (the last line is recorded if
  the store does not hold it yet), so the store also gets every verdict exactly once.

The run's counts and provenance go to ``<out>.manifest.json`` (written atomically at the end), and a
Parquet copy of the verdicts on request.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from kuaimod_open import __version__
from kuaimod_open._lazy import require
from kuaimod_open.core.progress import Progress
from kuaimod_open.errors import ConfigError
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.policy import Policy
from kuaimod_open.judge.prompt import Template
from kuaimod_open.judge.verdict import ParseStatus, Verdict

if TYPE_CHECKING:
    from kuaimod_open.loop.store import Store

T = TypeVar("T")


@dataclass
class JobSummary:
    """Counts and timings of one run (also written into the run's manifest)."""

    total: int = 0
    skipped: int = 0
    written: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    stages: Counter[str] = field(default_factory=Counter)
    errors: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 0
    engine: str = "local"
    prepare_seconds: float = 0.0  # summed over workers
    inference_seconds: float = 0.0

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
            "workers": self.workers,
            "engine": self.engine,
            "prepare_seconds": round(self.prepare_seconds, 3),
            "inference_seconds": round(self.inference_seconds, 3),
        }


class JobManifest(BaseModel):
    """``<out>.manifest.json``: what the last run into a verdict file did and with what."""

    summary: dict[str, Any]
    model: str
    adapter: str | None
    policy_version: str
    policy_digest: str
    prompt_digest: str
    package_version: str
    out: str
    parquet: str | None = None


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


def _last_line(out: Path) -> str | None:
    """The last complete line of a file, read from its end (files of millions of verdicts stay cheap)."""
    with out.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        end = handle.tell()
        chunk = b""
        while end > 0:
            start = max(0, end - (1 << 16))
            handle.seek(start)
            chunk = handle.read(end - start) + chunk
            lines = chunk.rstrip(b"\n").split(b"\n")
            if len(lines) > 1 or start == 0:
                return lines[-1].decode("utf-8") or None
            end = start
    return None


class VerdictWriter:
    """Append verdicts to ``out`` exactly once (see the module docstring); use as a context manager.

    Args:
        out: the JSONL verdict file.
        store: also record each prepared sample and verdict in this feedback store.
        policy: the policy that judged (ranks the verdicts' severity in the store's review queue).
        unique: batch jobs (True) skip and refuse ids already written; the online service (False)
            may judge the same id again (a re-upload) and logs every verdict it serves.
        progress: show a bar over the ids :meth:`pending` returns.
        desc: the bar's label.
    """

    def __init__(
        self,
        out: str | Path,
        *,
        store: Store | None = None,
        policy: Policy | None = None,
        unique: bool = True,
        progress: bool = False,
        desc: str = "moderating",
    ) -> None:
        self.out = Path(out)
        self.store = store
        self.policy = policy
        self.unique = unique
        self.summary = JobSummary()
        self.done: set[str] = set()
        self._progress_enabled = progress
        self._desc = desc
        self._bar = Progress(0, desc=desc, enabled=False)
        self._lock_file: IO[str] | None = None
        self._handle: IO[str] | None = None
        self._mutex = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> VerdictWriter:
        """Take the lock, repair a torn tail, read the finished ids and open the file for appending."""
        import fcntl

        self.out.parent.mkdir(parents=True, exist_ok=True)
        lock = self.out.with_name(self.out.name + ".lock").open("a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise ConfigError(f"Another job is writing {self.out}; wait for it or choose another --out") from None
        self._lock_file = lock
        try:
            self.done = completed_ids(self.out)
            if self.store is not None and self.done:
                self._recover_store()
            self._handle = self.out.open("a", encoding="utf-8")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Close the file and release the lock (idempotent)."""
        self._bar.close()
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._lock_file is not None:
            self._lock_file.close()  # closing the descriptor releases the flock
            self._lock_file = None

    def __enter__(self) -> VerdictWriter:
        return self.open()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    def pending(self, items: Sequence[T], key: Callable[[T], str]) -> list[T]:
        """The items whose id is not written yet (ids must be unique); starts the progress bar over them."""
        ids = [key(item) for item in items]
        if len(set(ids)) != len(ids):
            raise ConfigError("Duplicate sample ids in the job: ids must be unique so the job can resume")
        todo = [item for item, sid in zip(items, ids, strict=True) if sid not in self.done]
        self.summary.total += len(items)
        self.summary.skipped += len(items) - len(todo)
        self._bar.close()
        self._bar = Progress(len(todo), desc=self._desc, unit="video", enabled=self._progress_enabled)
        return todo

    def write(self, verdict: Verdict, sample: Sample | None = None) -> bool:
        """Write one verdict (and record ``sample`` and it in the store); False if its id was already written.

        Thread-safe: the online service calls it from many request threads.
        """
        from kuaimod_open.loop.feedback import record_sample, record_verdict

        if self._handle is None:
            raise RuntimeError("VerdictWriter.write() outside `with VerdictWriter(...)`")
        line = verdict.model_dump_json()
        with self._mutex:
            if self.unique and verdict.sample_id in self.done:
                return False  # exactly once: a second verdict for a finished id is never written
            if self.store is not None and sample is not None:
                record_sample(self.store, sample)  # first write wins: a repeat after a crash changes nothing
            # One line per verdict, flushed and synced at once: a kill loses at most the line in flight.
            self._handle.write(line + "\n")
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self.done.add(verdict.sample_id)
            if self.store is not None:
                record_verdict(self.store, verdict, policy=self.policy)
            self.summary.add(verdict)
            self._bar.update()
        return True

    def _recover_store(self) -> None:
        """Record the file's last verdict if a kill came between writing it and storing it."""
        from kuaimod_open.loop.feedback import has_verdict, record_verdict

        assert self.store is not None
        last = _last_line(self.out)
        if last is None:
            return
        verdict = Verdict.model_validate_json(last)
        if not has_verdict(self.store, verdict):
            record_verdict(self.store, verdict, policy=self.policy)

    # ------------------------------------------------------------------ after the run

    def write_manifest(
        self,
        model: str,
        adapter: str | None,
        policy: Policy,
        template: Template,
        parquet: Path | None = None,
    ) -> Path:
        """Write ``<out>.manifest.json`` atomically: the run's summary and what it ran with."""
        manifest = JobManifest(
            summary=self.summary.as_dict(),
            model=model,
            adapter=adapter,
            policy_version=policy.version,
            policy_digest=policy.digest,
            prompt_digest=template.digest,
            package_version=__version__,
            out=str(self.out),
            parquet=str(parquet) if parquet else None,
        )
        path = self.out.with_name(self.out.name + ".manifest.json")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
        os.replace(tmp, path)  # readers see the old or the new manifest, never half of one
        return path


def read_verdicts(path: Path) -> list[Verdict]:
    """Every verdict in a verdict file, in file order."""
    from kuaimod_open.ingest.sample import read_jsonl

    return [Verdict.model_validate(obj) for _, obj in read_jsonl(path)]


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


__all__ = [
    "JobManifest",
    "JobSummary",
    "VerdictWriter",
    "completed_ids",
    "read_verdicts",
    "write_parquet",
]
