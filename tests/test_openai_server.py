"""The openai backend end to end against a local OpenAI-compatible server backed by the tiny Qwen2-VL.

Real HTTP on 127.0.0.1, the real ``openai`` client (concurrency, retries on 503, error answers), real
frames sent as data URLs and decoded by the server, the real transformers model answering.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

pytestmark = pytest.mark.hf
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")


@pytest.fixture
def openai_server(hf_backend):
    import uvicorn

    from kuaimod_open.serving.openai_compat import create_openai_app

    servers = []

    def start(fail_first: int = 0) -> str:
        app = create_openai_app(hf_backend, "tiny-qwen", fail_first=fail_first)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/v1"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.video
def test_moderate_through_the_openai_backend(openai_server, videos, tmp_path):
    pytest.importorskip("decord")
    from click.testing import CliRunner

    from kuaimod_open.cli import cli

    base = openai_server(fail_first=1)  # the first request gets a 503: the client must retry it
    out = tmp_path / "v.jsonl"
    args = [
        "moderate",
        str(videos[0].parent),
        "--backend",
        "openai",
        "--model",
        "tiny-qwen",
        "--base-url",
        base,
        "--batch-size",
        "2",
        "--frames",
        "2",
        "--max-new-tokens",
        "16",
        "--no-ocr",
        "--no-asr",
        "--out",
        str(out),
        "--no-progress",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(x["sample_id"] for x in lines) == ["bikes", "carphone_pristine"]
    for line in lines:
        # random tiny model: never a real verdict, always review; the 503 was retried, not surfaced
        assert line["decision"] == "review" and line["status"] in ("unparsed", "error")
        assert "503" not in (line["error"] or "")
        assert line["raw_output"] or "max_new_tokens" in (line["error"] or "")
        assert line["provenance"]["model"] == "tiny-qwen"


def test_errors_become_error_generations(openai_server, frame_images):
    from kuaimod_open.judge.backends.base import GenerateConfig, Request
    from kuaimod_open.judge.backends.openai_api import OpenAIBackend
    from kuaimod_open.judge.prompt import ImagePart, Message

    base = openai_server()
    messages = (Message("system", ("be brief",)), Message("user", ("look: ", ImagePart(frame_images[0]), " ok?")))
    good = OpenAIBackend("tiny-qwen", base_url=base, max_retries=0)
    (gen,) = good.generate([Request("a", messages)], GenerateConfig(max_new_tokens=8))
    # the random model runs to max_tokens: finish_reason "length", reported as a cut-off generation
    assert gen.text and "max_new_tokens=8" in (gen.error or "") and gen.latency_s is not None
    wrong = OpenAIBackend("no-such-model", base_url=base, max_retries=0)
    (bad,) = wrong.generate([Request("b", messages)], GenerateConfig(max_new_tokens=8))
    assert bad.error and "NotFound" in bad.error
    down = OpenAIBackend("tiny-qwen", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout=5)
    (none,) = down.generate([Request("c", messages)], GenerateConfig(max_new_tokens=8))
    assert none.error and "Connection" in none.error
