"""``kuaimod serve``: the online moderation path as a small HTTP API (FastAPI + uvicorn).

Endpoints (OpenAPI schema at ``/openapi.json``, interactive docs at ``/docs``):

* ``POST /v1/moderate`` (JSON): a video by ``path`` (inside a configured root) or ``url`` (under a
  configured URL prefix), or text alone; answers with the verdict.
* ``POST /v1/moderate/upload`` (multipart): an uploaded video file plus optional text fields.
* ``POST /v1/feedback``: a reviewer's correction of a verdict, appended to a JSONL file.
* ``GET /healthz`` (no key needed) and ``GET /metrics`` (Prometheus text format).

Every ``/v1`` call needs an API key (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``) unless the
server was started with ``--no-auth``. Bodies above the size limits are refused with 413 before
they are read. Concurrent requests are gathered into batches for the backend (see ``Batcher``).
"""

# No `from __future__ import annotations` here: FastAPI reads the route annotations at runtime.

import hashlib
import hmac
import json
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from kuaimod_open import __version__
from kuaimod_open._lazy import require
from kuaimod_open.ingest.fetch import FetchError, FetchPolicy, check_url, fetch
from kuaimod_open.ingest.keys import key_for, stored_name
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.backends.base import Backend
from kuaimod_open.judge.pipeline import ModerationConfig, moderate, prepare
from kuaimod_open.judge.policy import Policy
from kuaimod_open.judge.prompt import Template
from kuaimod_open.judge.verdict import Verdict
from kuaimod_open.serving.runner import Judge

JSON_LIMIT = 1 << 20  # 1 MiB: text fields are clipped in the prompt anyway
# Container formats the decoders read. Anything else (an .html, .exe or .svg "video") is refused with
# 415 before it is written to disk; a file with a video suffix but broken content becomes an error
# verdict (review), which is itself worth a human look.
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".ts", ".3gp", ".mpg", ".mpeg", ".wmv"}
)


@dataclass(frozen=True)
class ServeSettings:
    """What the service accepts and where it writes."""

    api_keys: frozenset[str] = frozenset()
    allow_anonymous: bool = False
    roots: tuple[Path, ...] = ()  # local folders a client may name videos in
    url_prefixes: tuple[str, ...] = ()  # e.g. "https://cdn.example.com/videos/"
    max_upload_bytes: int = 200 << 20
    max_json_bytes: int = JSON_LIMIT
    video_suffixes: frozenset[str] = VIDEO_SUFFIXES  # accepted file types for uploads and URLs
    work_dir: Path = Path(".kuaimod/serve")
    feedback_path: Path = Path(".kuaimod/serve/feedback.jsonl")
    verdict_log: Path | None = None  # every served verdict, appended (audit trail)
    batch_wait_s: float = 0.02  # how long the first request of a batch waits for company
    # Networks a URL may lead to although they are not public (--allow-network); default: none.
    allow_networks: tuple[str, ...] = ()
    fetch_timeout_s: float = 120.0  # the whole download of a URL, redirects included

    def fetch_policy(self) -> FetchPolicy:
        """The fetcher's rules for client URLs (raises ConfigError for a bad prefix or network)."""
        return FetchPolicy(
            prefixes=self.url_prefixes,
            allow_networks=self.allow_networks,
            max_bytes=self.max_upload_bytes,
            total_s=self.fetch_timeout_s,
        )


class ModerateRequest(BaseModel):
    """A video to moderate, by path or URL, with whatever text is known; or text alone."""

    id: str | None = Field(default=None, max_length=200, description="Your id for the video; default: derived")
    path: str | None = Field(default=None, description="File inside one of the server's --root folders")
    url: str | None = Field(default=None, description="http(s) URL under one of the server's --allow-url prefixes")
    title: str = ""
    ocr: str = ""
    asr: str = ""
    comments: list[str] = Field(default_factory=list)


class FeedbackIn(BaseModel):
    """A reviewer's judgement of a served verdict."""

    sample_id: str = Field(min_length=1, max_length=200)
    decision: str | None = Field(default=None, description="The correct decision: allow, restrict, review or block")
    category: str | None = Field(default=None, description="The correct policy code, e.g. PRIVATE_DEAL")
    agree: bool | None = Field(default=None, description="Whether the served verdict was right")
    note: str = Field(default="", max_length=5000)
    reviewer: str = Field(default="", max_length=200)


class FeedbackRecord(FeedbackIn):
    """One line of the feedback file."""

    id: str
    received_at: datetime


class Metrics:
    """Counters in the Prometheus text format; no client library needed for a handful of series."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.verdicts: Counter[tuple[str, str]] = Counter()
        self.seconds_sum = 0.0
        self.seconds_count = 0
        self.batches = 0
        self.batched = 0
        self.in_flight = 0

    def render(self) -> str:
        """The exposition text."""
        with self.lock:
            lines = ["# TYPE kuaimod_requests_total counter"]
            for (method, path, code), n in sorted(self.requests.items()):
                lines.append(f'kuaimod_requests_total{{method="{method}",path="{path}",code="{code}"}} {n}')
            lines.append("# TYPE kuaimod_verdicts_total counter")
            for (decision, status), n in sorted(self.verdicts.items()):
                lines.append(f'kuaimod_verdicts_total{{decision="{decision}",status="{status}"}} {n}')
            lines += [
                "# TYPE kuaimod_moderation_seconds summary",
                f"kuaimod_moderation_seconds_sum {self.seconds_sum:.6f}",
                f"kuaimod_moderation_seconds_count {self.seconds_count}",
                "# TYPE kuaimod_backend_batches_total counter",
                f"kuaimod_backend_batches_total {self.batches}",
                "# TYPE kuaimod_backend_batched_samples_total counter",
                f"kuaimod_backend_batched_samples_total {self.batched}",
                "# TYPE kuaimod_in_flight gauge",
                f"kuaimod_in_flight {self.in_flight}",
            ]
        return "\n".join(lines) + "\n"


class Batcher:
    """One thread owns the backend; requests queue up and are judged in batches.

    The first request of a batch waits up to ``wait_s`` for others, so concurrent clients share
    one generate call (``batch_size`` at most) instead of taking turns.
    """

    def __init__(
        self,
        policy: Policy,
        backend: Backend,
        template: Template,
        config: ModerationConfig,
        wait_s: float,
        metrics: Metrics,
        judge: Judge | None = None,
    ) -> None:
        self.policy, self.backend, self.template, self.wait_s, self.metrics = policy, backend, template, wait_s, metrics
        self.judge = judge  # e.g. the cascade: the router first, the VLM for the rest
        self.config = replace(config, extract=None, hashing=None)  # samples arrive prepared
        self.queue: queue.Queue[tuple[Sample, Future[Verdict]]] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="kuaimod-batcher", daemon=True)
        self.thread.start()

    def submit(self, sample: Sample) -> "Future[Verdict]":
        """Queue a prepared sample; the future resolves to its verdict."""
        future: Future[Verdict] = Future()
        self.queue.put((sample, future))
        return future

    def _loop(self) -> None:
        size = max(1, self.config.generate.batch_size)
        while True:
            batch = [self.queue.get()]
            deadline = time.monotonic() + self.wait_s
            while len(batch) < size and (left := deadline - time.monotonic()) > 0:
                try:
                    batch.append(self.queue.get(timeout=left))
                except queue.Empty:
                    break
            try:
                samples = [s for s, _ in batch]
                if self.judge is not None:
                    verdicts = self.judge(samples)
                else:
                    verdicts = list(moderate(samples, self.policy, self.backend, self.template, self.config))
            except Exception as exc:  # a backend-wide failure fails this batch, not the server
                for _, future in batch:
                    future.set_exception(exc)
                continue
            with self.metrics.lock:
                self.metrics.batches += 1
                self.metrics.batched += len(batch)
            for (_, future), verdict in zip(batch, verdicts, strict=True):
                future.set_result(verdict)


ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


class BodyLimit:
    """Refuse request bodies over the limit (413) or without a Content-Length (411), before reading them."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        """ASGI entry point."""
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            limit = self.limit_for(scope["path"])
            if length is None or not length.isdigit():
                return await _plain(send, 411, "send a Content-Length header")
            if int(length) > limit:
                return await _plain(send, 413, f"request body over the {limit} byte limit")
        await self.app(scope, receive, send)


async def _plain(send: Any, status: int, text: str) -> None:
    body = json.dumps({"detail": text}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass
class _State:
    settings: ServeSettings
    policy: Policy
    template: Template
    backend: Backend
    config: ModerationConfig
    metrics: Metrics = field(default_factory=Metrics)
    file_lock: threading.Lock = field(default_factory=threading.Lock)


def create_app(
    settings: ServeSettings,
    policy: Policy,
    template: Template,
    backend: Backend,
    config: ModerationConfig,
    batch_judge: Judge | None = None,
) -> Any:
    """Build the FastAPI application (see the module docstring for the endpoints).

    ``batch_judge`` replaces the VLM call on each batch of prepared samples (e.g. the cascade, so the router
    answers the clear cases at once and only the rest wait for the VLM).
    """
    require("fastapi", extra="serve", purpose="the HTTP service")
    from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import PlainTextResponse

    state = _State(settings, policy, template, backend, config)
    fetch_policy = settings.fetch_policy()
    batcher = Batcher(policy, backend, template, config, settings.batch_wait_s, state.metrics, batch_judge)
    app = FastAPI(
        title="kuaimod_open moderation API",
        version=__version__,
        description="Short-video content moderation with a VLM as policy. Send a video, get a verdict.",
    )

    def check_key(request: Request) -> None:
        if settings.allow_anonymous:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        # Compare against every key in constant time: no timing hint about which prefix matched.
        if not given or not any(hmac.compare_digest(given, key) for key in settings.api_keys):
            raise HTTPException(401, "missing or wrong API key (Authorization: Bearer KEY or X-API-Key: KEY)")

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Any:
        with state.metrics.lock:
            state.metrics.in_flight += 1
        try:
            response = await call_next(request)
        finally:
            with state.metrics.lock:
                state.metrics.in_flight -= 1
        route = request.scope.get("route")
        path = getattr(route, "path", "other")
        with state.metrics.lock:
            state.metrics.requests[(request.method, path, response.status_code)] += 1
        return response

    async def judge(sample: Sample) -> Verdict:
        started = time.perf_counter()
        ready = await run_in_threadpool(_prepare_or_error, sample, state)
        verdict = await _wrap(batcher.submit(ready)) if isinstance(ready, Sample) else ready
        with state.metrics.lock:
            state.metrics.verdicts[(str(verdict.decision), str(verdict.status))] += 1
            state.metrics.seconds_sum += time.perf_counter() - started
            state.metrics.seconds_count += 1
        if settings.verdict_log is not None:
            await run_in_threadpool(_append, settings.verdict_log, verdict.model_dump_json(), state.file_lock)
        return verdict

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """Liveness: the model is loaded and the batcher thread is running."""
        ok = batcher.thread.is_alive()
        if not ok:
            raise HTTPException(503, "the batcher thread stopped")
        return {"status": "ok", "model": backend.model_id, "policy_version": policy.version, "version": __version__}

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def metrics() -> str:
        """Prometheus metrics."""
        return state.metrics.render()

    @app.post("/v1/moderate", dependencies=[Depends(check_key)], tags=["moderation"])
    async def moderate_json(body: ModerateRequest) -> Verdict:
        """Moderate a video named by path or URL, or text alone."""
        video: Path | None = None
        content: str | None = None
        if body.path is not None:
            video = _confined(body.path, settings.roots)
        elif body.url is not None:
            if not settings.url_prefixes:
                raise HTTPException(403, "this server fetches no URLs (start it with --allow-url PREFIX)")
            try:
                checked = check_url(body.url, fetch_policy)
                video_suffix(urlsplit(checked).path, settings.video_suffixes)
                got = await run_in_threadpool(fetch, checked, settings.work_dir / "downloads", fetch_policy)
            except FetchError as exc:
                # Refusals name the rule; network failures all read the same (no errno, no address).
                status = {"refused": 403, "too_large": 413}.get(exc.reason, 502)
                raise HTTPException(status, str(exc)) from None
            video, content = got.path, got.content
        sid = body.id or _derived_id(body, video)
        sample = Sample(
            id=sid, video=video, title=body.title, ocr=body.ocr, asr=body.asr, comments=tuple(body.comments)
        )
        if content is not None:
            sample = sample.model_copy(update={"key": key_for(sid, content)})
        return await judge(sample)

    @app.post("/v1/moderate/upload", dependencies=[Depends(check_key)], tags=["moderation"])
    async def moderate_upload(
        file: UploadFile = File(..., description="The video file"),  # noqa: B008 (FastAPI's declaration style)
        id: str | None = Form(None, max_length=200),  # noqa: A002,B008
        title: str = Form(""),  # noqa: B008
        ocr: str = Form(""),  # noqa: B008
        asr: str = Form(""),  # noqa: B008
        comments: list[str] = Form([]),  # noqa: B008
    ) -> Verdict:
        """Moderate an uploaded video file."""
        suffix = video_suffix(file.filename or "", settings.video_suffixes)
        dst, digest = await run_in_threadpool(_save_upload, file.file, settings.work_dir / "uploads", suffix)
        sid = id or f"upload-{digest[:16]}"
        sample = Sample(
            id=sid, video=dst, title=title, ocr=ocr, asr=asr, comments=tuple(comments), key=key_for(sid, digest)
        )
        return await judge(sample)

    @app.post("/v1/feedback", dependencies=[Depends(check_key)], tags=["feedback"])
    async def feedback(body: FeedbackIn) -> dict[str, str]:
        """Record a reviewer's judgement of a verdict (appended to the server's feedback file)."""
        if body.decision is not None and body.decision not in ("allow", "restrict", "review", "block"):
            raise HTTPException(422, "decision must be allow, restrict, review or block")
        if body.category is not None and body.category not in policy.codes():
            raise HTTPException(422, f"unknown category {body.category!r}; see the policy's codes")
        record = FeedbackRecord(**body.model_dump(), id=uuid.uuid4().hex, received_at=datetime.now(UTC))
        await run_in_threadpool(_append, settings.feedback_path, record.model_dump_json(), state.file_lock)
        return {"status": "recorded", "id": record.id}

    def limit_for(path: str) -> int:
        return settings.max_upload_bytes if path.endswith("/upload") else settings.max_json_bytes

    app.add_middleware(BodyLimit, limit_for=limit_for)
    return app


def _prepare_or_error(sample: Sample, state: _State) -> Sample | Verdict:
    # Frame sampling and OCR/ASR are CPU work: they run in the thread pool, not on the event loop.
    from kuaimod_open.errors import KuaimodError
    from kuaimod_open.judge.pipeline import provenance_for
    from kuaimod_open.judge.verdict import Stage, error_verdict

    try:
        return prepare(sample, replace(state.config, frames_dir=state.settings.work_dir / "frames"))
    except KuaimodError as exc:
        prov = provenance_for(sample, state.policy, state.template, state.backend, state.config)
        return error_verdict(sample.id, str(exc), prov, stage=Stage.PIPELINE)


async def _wrap(future: "Future[Verdict]") -> Verdict:
    import asyncio

    return await asyncio.wrap_future(future)


def _confined(raw: str, roots: tuple[Path, ...]) -> Path:
    """The real path of ``raw`` if it lies inside a root (symlinks and '..' resolved), else 403/404."""
    from fastapi import HTTPException

    if not roots:
        raise HTTPException(403, "this server accepts no paths (start it with --root DIR)")
    if "\x00" in raw:
        raise HTTPException(400, "the path contains a NUL byte")
    for root in roots:
        base = root.resolve()
        candidate = (base / raw).resolve()  # an absolute raw path replaces base here
        if candidate.is_relative_to(base):
            if not candidate.is_file():
                raise HTTPException(404, f"no such file under the roots: {raw}")
            return candidate
    raise HTTPException(403, "the path is outside the server's --root folders")


def video_suffix(name: str, allowed: frozenset[str]) -> str:
    """The lower-cased suffix of a client-given file name, ``.mp4`` when it has none.

    Raises:
        HTTPException: 415 when the suffix is not an accepted video container.
    """
    from fastapi import HTTPException

    suffix = Path(name).suffix.lower() or ".mp4"
    if suffix not in allowed:
        raise HTTPException(415, f"{suffix!r} is not an accepted video type; send one of {', '.join(sorted(allowed))}")
    return suffix


def _derived_id(body: ModerateRequest, video: Path | None) -> str:
    key = str(video) if video is not None else json.dumps(body.model_dump(), ensure_ascii=False, sort_keys=True)
    return "req-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _save_upload(src: Any, folder: Path, suffix: str) -> tuple[Path, str]:
    """Store an upload under its content digest (written privately, then renamed into place)."""
    import os
    import tempfile

    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".part-")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
        dst = folder / stored_name(h.hexdigest(), suffix)
        os.replace(tmp_name, dst)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return dst, h.hexdigest()


def _append(path: Path, line: str, lock: threading.Lock) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with lock, path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
