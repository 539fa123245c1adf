"""The openai backend against a real local HTTP server speaking the chat-completions protocol."""

from __future__ import annotations

import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import verdict_json

from kuaimod_open.errors import BackendError
from kuaimod_open.ingest.sample import Frame, Sample
from kuaimod_open.judge.backends.base import GenerateConfig
from kuaimod_open.judge.pipeline import ModerationConfig, moderate
from kuaimod_open.judge.policy import Decision
from kuaimod_open.judge.verdict import ParseStatus

pytest.importorskip("openai")


class FakeServer:
    """Answers POST /v1/chat/completions from a script of (status, body) pairs; records requests."""

    def __init__(self) -> None:
        self.script: deque[tuple[int, dict | str]] = deque()
        self.default: tuple[int, dict | str] | None = None
        self.responder = None  # optional callable: request body -> (status, payload)
        self.requests: list[dict] = []
        server = self

        self.models: list[dict] = [{"id": "served-model", "object": "model", "owned_by": "test"}]

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                data = json.dumps({"object": "list", "data": server.models}).encode()
                self.send_response(200 if self.path.endswith("/models") else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                if server.responder is not None:
                    status, payload = server.responder(body)
                else:
                    status, payload = server.script.popleft() if server.script else server.default
                data = (json.dumps(payload) if isinstance(payload, dict) else payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("retry-after-ms", "5")  # keep the client's backoff short in tests
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(text: str, finish: str = "stop") -> dict:
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": "served",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 321, "completion_tokens": 45, "total_tokens": 366},
    }


def _backend(url: str, **kw):
    from kuaimod_open.judge.backends.openai_api import OpenAIBackend

    return OpenAIBackend("served-model", base_url=url, api_key="secret", **kw)


def _config(tmp_path: Path, batch: int = 4) -> ModerationConfig:
    return ModerationConfig(frames_dir=tmp_path, generate=GenerateConfig(max_new_tokens=256, batch_size=batch))


def test_frames_are_sent_as_data_urls_and_the_verdict_parsed(policy, template, frame_images, tmp_path):
    sample = Sample(id="v", frames=tuple(Frame(path=p, timestamp=float(i)) for i, p in enumerate(frame_images)))
    with FakeServer() as server:
        server.script.append((200, completion(verdict_json("PRIVATE_DEAL"))))
        (verdict,) = moderate([sample], policy, _backend(server.url), template, _config(tmp_path))
    assert verdict.status is ParseStatus.OK and verdict.decision is Decision.BLOCK
    assert (verdict.input_tokens, verdict.output_tokens) == (321, 45)
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer secret"
    body = req["body"]
    assert body["model"] == "served-model" and body["max_tokens"] == 256 and body["temperature"] == 0.0
    system, user = body["messages"]
    assert system["role"] == "system" and "KuaiMod default policy" in system["content"]
    images = [c for c in user["content"] if c["type"] == "image_url"]
    assert len(images) == 3 and all(
        c["image_url"]["url"].startswith(("data:image/jpeg;base64,", "data:image/png;base64,")) for c in images
    )


def test_server_errors_are_retried_then_succeed(policy, template, tmp_path):
    with FakeServer() as server:
        server.script.extend(
            [(500, {"error": {"message": "overloaded"}}), (503, "busy"), (200, completion(verdict_json("BENIGN")))]
        )
        (verdict,) = moderate(
            [Sample(id="x")], policy, _backend(server.url, max_retries=3), template, _config(tmp_path)
        )
    assert verdict.decision is Decision.ALLOW and len(server.requests) == 3


def test_persistent_failure_becomes_an_error_verdict(policy, template, tmp_path):
    with FakeServer() as server:
        server.default = (503, {"error": {"message": "down"}})
        verdicts = list(
            moderate(
                [Sample(id="x"), Sample(id="y")],
                policy,
                _backend(server.url, max_retries=1),
                template,
                _config(tmp_path),
            )
        )
    assert all(v.status is ParseStatus.ERROR and v.decision is Decision.REVIEW for v in verdicts)
    assert "InternalServerError" in verdicts[0].error
    assert len(server.requests) == 4  # 2 requests x (1 try + 1 retry)


def test_unreachable_server_is_an_error_verdict_not_a_crash(policy, template, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = _backend(f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=2)
    (verdict,) = moderate([Sample(id="x")], policy, backend, template, _config(tmp_path))
    assert verdict.status is ParseStatus.ERROR and "APIConnectionError" in verdict.error


def test_truncated_generation_is_flagged(policy, template, tmp_path):
    with FakeServer() as server:
        server.script.append((200, completion("### 1. Content extraction\nA very long", finish="length")))
        (verdict,) = moderate([Sample(id="x")], policy, _backend(server.url), template, _config(tmp_path))
    assert verdict.status is ParseStatus.ERROR and "max_new_tokens" in verdict.error


def test_concurrent_batch_keeps_request_order(policy, template, tmp_path):
    samples = [Sample(id=f"s{i}", title=f"title-{i}") for i in range(6)]

    def by_title(body: dict) -> tuple[int, dict]:
        user = body["messages"][1]["content"]
        text = user if isinstance(user, str) else "".join(c.get("text", "") for c in user)
        number = int(text.split("title-")[1][0])
        return 200, completion(verdict_json("HATE" if number % 2 == 0 else "BENIGN"))

    with FakeServer() as server:
        server.responder = by_title
        verdicts = list(moderate(samples, policy, _backend(server.url, concurrency=3), template, _config(tmp_path, 6)))
    assert [v.sample_id for v in verdicts] == [s.id for s in samples]
    assert [v.category for v in verdicts] == ["HATE", "BENIGN"] * 3
    assert len(server.requests) == 6


def test_missing_base_url_is_a_clear_error():
    from kuaimod_open.judge.backends.openai_api import OpenAIBackend

    with pytest.raises(BackendError, match="--base-url"):
        OpenAIBackend("m", base_url=None)


# --------------------------------------------------------------------------- issue #18


def test_a_truncated_answer_never_acts_even_with_a_label_line_and_a_json_start(policy, template, tmp_path):
    # Cut off mid-JSON: the text has "```json" and a label line in the unfinished reasoning. Parsed, it
    # would block; cut off, it is an error verdict for a person, with the text kept.
    text = '### 3. Interim check\n类别：辱骂、引战、宣扬仇恨 (to be checked)\n```json\n{"category": "HATE", "conf'
    with FakeServer() as server:
        server.script.append((200, completion(text, finish="length")))
        (verdict,) = moderate([Sample(id="x")], policy, _backend(server.url), template, _config(tmp_path))
    assert (verdict.status, verdict.decision) == (ParseStatus.ERROR, Decision.REVIEW)
    assert "truncated_answer" in verdict.flags and verdict.raw_output == text


def test_frames_reach_the_server_at_the_size_and_pixels_hf_uses(policy, template, tmp_path):
    # vLLM would use the checkpoint's own max_pixels (16,384 tokens an image) where hf, training and the
    # gate use 448: the client resizes each frame to exactly what qwen-vl-utils gives hf.
    import base64
    import io

    vision = pytest.importorskip("qwen_vl_utils")
    import numpy as np
    from PIL import Image

    from kuaimod_open.judge.backends.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS

    rng = np.random.default_rng(0)
    frames = []
    for i, size in enumerate([(1280, 720), (720, 1280), (640, 360), (100, 60)]):
        path = tmp_path / f"f{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)
        frames.append(path)
    sample = Sample(id="v", frames=tuple(Frame(path=p, timestamp=float(i)) for i, p in enumerate(frames)))
    with FakeServer() as server:
        server.default = (200, completion(verdict_json("BENIGN")))
        list(moderate([sample], policy, _backend(server.url), template, _config(tmp_path)))
    user = server.requests[0]["body"]["messages"][1]["content"]
    urls = [c["image_url"]["url"] for c in user if c["type"] == "image_url"]
    for path, url in zip(frames, urls, strict=True):
        sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
        element = {"image": str(path), "min_pixels": DEFAULT_MIN_PIXELS, "max_pixels": DEFAULT_MAX_PIXELS}
        seen_by_hf = vision.fetch_image(element, image_patch_size=14)
        assert sent.size == seen_by_hf.size
        assert sent.size[0] % 28 == 0 and sent.size[1] % 28 == 0
        assert np.array_equal(np.asarray(sent), np.asarray(seen_by_hf)), path.name


def test_budget_arithmetic_matches_qwen_vl_utils():
    vision = pytest.importorskip("qwen_vl_utils")
    from kuaimod_open.judge.backends.images import fit_to_budget

    sizes = [(w, h) for w in (28, 55, 100, 333, 640, 720, 1080, 1280, 1920, 3840) for h in (30, 90, 360, 720, 2160)]
    for factor, budget in ((28, (64 * 28 * 28, 448 * 28 * 28)), (32, (65536, 16777216)), (28, (3136, 12845056))):
        for w, h in sizes:
            ours = fit_to_budget(w, h, factor=factor, min_pixels=budget[0], max_pixels=budget[1])
            theirs = vision.smart_resize(h, w, factor=factor, min_pixels=budget[0], max_pixels=budget[1])
            assert ours == (theirs[1], theirs[0]), (w, h, factor)


def test_the_window_keeps_sending_while_a_slow_request_runs(policy, template, tmp_path):
    # A continuously batching server starts each request on arrival. Waiting for a whole batch wastes it:
    # here the first answer takes 2 s, and every other request must be sent (and answered) meanwhile.
    samples = [Sample(id=f"s{i}", title=f"title-{i}") for i in range(6)]
    finished: dict[int, float] = {}
    arrived: dict[int, float] = {}

    def slow_first(body: dict) -> tuple[int, dict]:
        import time

        user = body["messages"][1]["content"]
        text = user if isinstance(user, str) else "".join(c.get("text", "") for c in user)
        number = int(text.split("title-")[1][0])
        arrived[number] = time.monotonic()
        if number == 0:
            time.sleep(2.0)
        finished[number] = time.monotonic()
        return 200, completion(verdict_json("BENIGN"))

    with FakeServer() as server:
        server.responder = slow_first
        backend = _backend(server.url, concurrency=2)
        verdicts = list(moderate(samples, policy, backend, template, _config(tmp_path, batch=2)))
    assert [v.sample_id for v in verdicts] == [s.id for s in samples]  # still in input order
    assert all(arrived[i] < finished[0] for i in range(1, 6)), "requests waited for the slow head of their batch"


def test_an_adapter_is_sent_as_the_model_and_recorded(policy, template, tmp_path):
    adapter_dir = tmp_path / "lora-20261203-010203"
    adapter_dir.mkdir()
    with FakeServer() as server:
        server.models.append({"id": adapter_dir.name, "object": "model", "owned_by": "test", "parent": "served-model"})
        server.default = (200, completion(verdict_json("HATE")))
        backend = _backend(server.url, adapter=str(adapter_dir))
        (verdict,) = moderate([Sample(id="x")], policy, backend, template, _config(tmp_path))
    assert server.requests[0]["body"]["model"] == adapter_dir.name
    assert verdict.provenance.adapter == adapter_dir.name and verdict.provenance.model == "served-model"


def test_an_adapter_the_server_does_not_serve_fails_loudly_before_any_request(tmp_path):
    from kuaimod_open.errors import ConfigError

    with FakeServer() as server:
        with pytest.raises(ConfigError, match="--enable-lora --lora-modules lora-x="):
            _backend(server.url, adapter="lora-x")
        server.models.append({"id": "lora-x", "object": "model", "owned_by": "test", "parent": "another-base"})
        with pytest.raises(ConfigError, match="another-base"):
            _backend(server.url, adapter="lora-x")
    assert server.requests == []
