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

        class Handler(BaseHTTPRequestHandler):
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
    assert len(images) == 3 and all(c["image_url"]["url"].startswith("data:image/jpeg;base64,") for c in images)


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
