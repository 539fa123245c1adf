"""The HTTP service, exercised through a real uvicorn server on 127.0.0.1 and real HTTP requests."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from helpers import verdict_json

from kuaimod_open.judge.backends.base import GenerateConfig
from kuaimod_open.judge.backends.scripted import ScriptedBackend
from kuaimod_open.judge.pipeline import ModerationConfig

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

KEY = "test-key-123"
PROMO = Path(__file__).parent / "data" / "promo_zh.mp4"


def call(
    url: str,
    body: bytes | dict | None = None,
    *,
    key: str | None = KEY,
    headers: dict | None = None,
    method: str | None = None,
) -> tuple[int, Any]:
    """One HTTP request; returns (status, parsed JSON or text)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    if isinstance(body, dict):
        request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, raw, kind = response.status, response.read(), response.headers.get("content-type", "")
    except urllib.error.HTTPError as exc:
        status, raw, kind = exc.code, exc.read(), exc.headers.get("content-type", "")
    return status, json.loads(raw) if "json" in kind else raw.decode()


def multipart(fields: dict[str, str], file_name: str, content: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
        "Content-Type: video/mp4\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.fixture
def start_server(policy, template, tmp_path):
    import uvicorn

    from kuaimod_open.serving.service import ServeSettings, create_app

    servers = []

    def start(backend: ScriptedBackend, batch_judge: Any = None, **overrides: Any) -> str:
        settings = ServeSettings(
            **{
                "api_keys": frozenset({KEY, "other-key"}),
                "work_dir": tmp_path / "serve",
                "feedback_path": tmp_path / "serve" / "feedback.jsonl",
                "verdict_log": tmp_path / "serve" / "verdicts.jsonl",
                **overrides,
            }
        )
        config = ModerationConfig(frames=2, generate=GenerateConfig(batch_size=4))
        app = create_app(settings, policy, template, backend, config, batch_judge)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.video
def test_moderate_by_path_and_upload_with_keys_roots_and_limits(start_server, video_dir, tmp_path):
    pytest.importorskip("decord")
    answer = verdict_json("PRIVATE_DEAL", evidence={"frames": [1], "text": [{"field": "title", "quote": "加我"}]})
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(video_dir / "bikes.mp4", root / "bikes.mp4")
    (tmp_path / "secret.mp4").write_bytes(b"outside")
    base = start_server(ScriptedBackend(default=answer), roots=(root,), max_upload_bytes=100_000)

    assert call(f"{base}/healthz", key=None)[0] == 200
    assert call(f"{base}/v1/moderate", {"title": "x"}, key=None)[0] == 401
    assert call(f"{base}/v1/moderate", {"title": "x"}, key="wrong")[0] == 401
    status, verdict = call(f"{base}/v1/moderate", {"id": "b1", "path": "bikes.mp4", "title": "加我微信"})
    assert status == 200, verdict
    assert verdict["sample_id"] == "b1" and verdict["decision"] == "block" and verdict["category"] == "PRIVATE_DEAL"
    assert len(verdict["provenance"]["frame_timestamps"]) == 3
    # X-API-Key works too; a text-only request needs no video
    status, text_only = call(f"{base}/v1/moderate", {"title": "加我"}, key=None, headers={"X-API-Key": "other-key"})
    assert status == 200 and text_only["sample_id"].startswith("req-")
    # confinement: '..', absolute paths elsewhere and symlinks out of the root are refused
    assert call(f"{base}/v1/moderate", {"path": "../secret.mp4"})[0] == 403
    assert call(f"{base}/v1/moderate", {"path": str(tmp_path / "secret.mp4")})[0] == 403
    os.symlink(tmp_path / "secret.mp4", root / "link.mp4")
    assert call(f"{base}/v1/moderate", {"path": "link.mp4"})[0] == 403
    assert call(f"{base}/v1/moderate", {"path": "missing.mp4"})[0] == 404
    assert call(f"{base}/v1/moderate", {"url": "https://evil.example/a.mp4"})[0] == 403
    # upload
    body, kind = multipart({"id": "up1", "title": "t"}, "promo.mp4", PROMO.read_bytes())
    status, up = call(f"{base}/v1/moderate/upload", body, headers={"Content-Type": kind})
    assert status == 200 and up["sample_id"] == "up1" and up["decision"] == "block", up
    html, kind = multipart({}, "page.HTML", b"<script>alert(1)</script>")
    status, refused = call(f"{base}/v1/moderate/upload", html, headers={"Content-Type": kind})
    assert status == 415 and ".mp4" in str(refused)  # type limit: says what is accepted
    upper, kind = multipart({"id": "up2"}, "PROMO.MP4", PROMO.read_bytes())
    assert call(f"{base}/v1/moderate/upload", upper, headers={"Content-Type": kind})[0] == 200
    big, kind = multipart({}, "big.mp4", b"\0" * 200_000)
    assert call(f"{base}/v1/moderate/upload", big, headers={"Content-Type": kind})[0] == 413
    # a broken upload is an error verdict (review), never allow
    junk, kind = multipart({"id": "junk"}, "junk.mp4", b"not a video")
    status, bad = call(f"{base}/v1/moderate/upload", junk, headers={"Content-Type": kind})
    assert status == 200 and bad["status"] == "error" and bad["decision"] == "review"
    assert len((tmp_path / "serve" / "verdicts.jsonl").read_text().splitlines()) == 5


def test_feedback_metrics_openapi_and_batching(start_server, tmp_path):
    def slow(request: object) -> str:
        time.sleep(0.2)
        return verdict_json("BENIGN")

    backend = ScriptedBackend(default=slow)
    base = start_server(backend, batch_wait_s=0.3)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: call(f"{base}/v1/moderate", {"id": f"t{i}", "title": f"标题{i}"}), range(4)))
    assert all(status == 200 and v["decision"] == "allow" for status, v in results)
    assert max(backend.batches) >= 2  # concurrent requests shared a generate call

    status, rec = call(
        f"{base}/v1/feedback",
        {
            "sample_id": "t1",
            "decision": "block",
            "category": "PRIVATE_DEAL",
            "agree": False,
            "note": "私下交易",
            "reviewer": "r1",
        },
    )
    assert status == 200 and rec["status"] == "recorded"
    assert call(f"{base}/v1/feedback", {"sample_id": "t1", "category": "NOPE"})[0] == 422
    assert call(f"{base}/v1/feedback", {"decision": "block"})[0] == 422
    (line,) = (tmp_path / "serve" / "feedback.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["category"] == "PRIVATE_DEAL"

    status, text = call(f"{base}/metrics", key=None)
    assert status == 200
    assert 'kuaimod_verdicts_total{decision="allow",status="ok"} 4' in text
    assert 'kuaimod_requests_total{method="POST",path="/v1/moderate",code="200"} 4' in text
    assert "kuaimod_moderation_seconds_count 4" in text
    status, schema = call(f"{base}/openapi.json", key=None)
    assert status == 200 and {"/v1/moderate", "/v1/moderate/upload", "/v1/feedback", "/healthz"} <= set(schema["paths"])
    # a body without Content-Length is refused before it is read
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1]))) as sock:
        sock.sendall(b"POST /v1/moderate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        assert b" 411 " in sock.recv(1000)


@pytest.mark.hf
def test_kuaimod_serve_command_answers(tiny_model, tmp_path):
    """The real command in a subprocess: tiny Qwen2-VL, key file, text-only request."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "keys.txt").write_text(f"# ops\n{KEY}\n", encoding="utf-8")
    cmd = [
        sys.executable,
        "-m",
        "kuaimod_open",
        "serve",
        "--model",
        str(tiny_model),
        "--device",
        "cpu",
        "--max-new-tokens",
        "16",
        "--no-ocr",
        "--no-asr",
        "--port",
        str(port),
        "--key-file",
        str(tmp_path / "keys.txt"),
        "--work-dir",
        str(tmp_path / "w"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if call(f"{base}/healthz", key=None)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.3)
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        status, verdict = call(f"{base}/v1/moderate", {"id": "x", "title": "扫码加微信"})
        assert status == 200 and verdict["decision"] == "review"
        assert verdict["status"] == "unparsed" or "truncated_answer" in verdict["flags"]
        assert verdict["provenance"]["model"] == str(tiny_model)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_with_the_cascade_answers_clear_cases_from_the_router(start_server, policy, template, tmp_path):
    pytest.importorskip("sklearn")
    from router_data import synthetic_rows, write_rows

    from kuaimod_open.first_stage.cascade import CascadeConfig, run_cascade
    from kuaimod_open.first_stage.router import RouterConfig, train_router
    from kuaimod_open.ingest.benchmark import load_benchmark
    from kuaimod_open.ingest.sample import Sample

    rows = load_benchmark(write_rows(tmp_path / "rows.jsonl", synthetic_rows(40, seed=5)))
    router = train_router(rows, policy, RouterConfig(features=["tfidf"], inner_folds=3))
    texts = ["今天做红烧肉 先放糖炒糖色", "加微信详聊 VX 123456 私下交易更便宜 想要的加我微信私下转账", "周末 微信"]
    p = router.score([Sample(id=str(i), title=t) for i, t in enumerate(texts)]).p_violative
    low, high = sorted(p)[0], sorted(p)[-1]
    assert low < sorted(p)[1] < high  # three distinct scores: allow, escalate, flag
    cascade = CascadeConfig(allow_below=(low + sorted(p)[1]) / 2, flag_at=(sorted(p)[1] + high) / 2)
    backend = ScriptedBackend(default=verdict_json("BENIGN", 0.9), model_id="vlm")

    def judge(batch):
        config = ModerationConfig(frames=2)
        return run_cascade(batch, policy, router, backend=backend, template=template, moderation=config, config=cascade)

    base = start_server(backend, batch_judge=judge)
    stages = {}
    for i, text in enumerate(texts):
        status, verdict = call(f"{base}/v1/moderate", {"id": f"c{i}", "title": text})
        assert status == 200, verdict
        stages[float(p[i])] = (verdict["stage"], verdict["decision"], verdict["flags"])
    assert stages[float(low)][0] == "router" and stages[float(low)][1] == "allow"
    assert stages[float(high)][0] == "router" and stages[float(high)][1] != "allow"
    middle = stages[float(sorted(p)[1])]
    assert middle[0] == "vlm" and "escalated" in middle[2]
    assert [r.sample_id for r in backend.history] == [f"c{list(p).index(sorted(p)[1])}"]  # only it reached the VLM
