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
    apps: list = []
    start_server_apps = apps

    def start(fail_first: int = 0, adapters=None) -> str:
        app = create_openai_app(hf_backend, "tiny-qwen", fail_first=fail_first, adapters=adapters)
        apps.append(app)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/v1"

    start.apps = start_server_apps
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
    assert gen.text and gen.truncated and gen.error is None and gen.latency_s is not None
    wrong = OpenAIBackend("no-such-model", base_url=base, max_retries=0)
    (bad,) = wrong.generate([Request("b", messages)], GenerateConfig(max_new_tokens=8))
    assert bad.error and "NotFound" in bad.error
    down = OpenAIBackend("tiny-qwen", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout=5)
    (none,) = down.generate([Request("c", messages)], GenerateConfig(max_new_tokens=8))
    assert none.error and "Connection" in none.error


def test_an_adapter_reaches_the_server_and_the_verdict(openai_server, tiny_model, tmp_path, policy, template):
    # vLLM serves LoRA modules by name (--enable-lora --lora-modules NAME=DIR); the client must name the
    # adapter as the model, the server must answer with it, and provenance must say so.
    peft = pytest.importorskip("peft")
    import transformers

    from kuaimod_open.ingest.sample import Sample
    from kuaimod_open.judge.backends.base import GenerateConfig
    from kuaimod_open.judge.backends.hf import HFBackend
    from kuaimod_open.judge.backends.openai_api import OpenAIBackend
    from kuaimod_open.judge.pipeline import ModerationConfig, moderate

    base_model = transformers.AutoModelForImageTextToText.from_pretrained(tiny_model)
    config = peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapter_dir = tmp_path / "lora-20261203-000000"
    peft.get_peft_model(base_model, config).save_pretrained(adapter_dir)
    tuned = HFBackend(str(tiny_model), adapter=str(adapter_dir), device="cpu")
    url = openai_server(adapters={adapter_dir.name: tuned})

    backend = OpenAIBackend("tiny-qwen", base_url=url, adapter=str(adapter_dir), max_retries=0)
    moderation = ModerationConfig(generate=GenerateConfig(max_new_tokens=4))
    (verdict,) = moderate([Sample(id="x", title="t")], policy, backend, template, moderation)
    assert verdict.provenance.adapter == adapter_dir.name and verdict.provenance.model == "tiny-qwen"
    assert openai_server.apps[-1].state.requests_by_model == {"tiny-qwen": 0, adapter_dir.name: 1}


def test_cli_adapter_not_served_is_a_config_error_before_any_video(openai_server, tmp_path):
    import subprocess
    import sys

    url = openai_server()
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"pid": "1", "title": "t", "OCR": "", "ASR": "", "images": []}) + "\n", encoding="utf-8")
    args = ["moderate", "--backend", "openai", "--model", "tiny-qwen", "--base-url", url, "--adapter", "lora-x"]
    args += ["--out", str(tmp_path / "v.jsonl"), "--no-progress", str(rows)]
    proc = subprocess.run([sys.executable, "-m", "kuaimod_open", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "adapter 'lora-x' is not served" in proc.stderr and "--lora-modules" in proc.stderr
    assert openai_server.apps[-1].state.requests_by_model == {"tiny-qwen": 0}
    assert not (tmp_path / "v.jsonl").exists() or not (tmp_path / "v.jsonl").read_text(encoding="utf-8")
