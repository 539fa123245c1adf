"""``kuaimod serve``: run the HTTP moderation API with uvicorn."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from kuaimod_open._lazy import require
from kuaimod_open.cli.moderate import (
    extract_config,
    extract_options,
    first_stage_options,
    first_stage_spec,
    match_option,
    match_stage,
)
from kuaimod_open.cli.options import (
    backend_options,
    build_backend,
    frame_options,
    load_policy_and_template,
    policy_options,
)
from kuaimod_open.errors import ConfigError
from kuaimod_open.ingest.pdq import HashConfig
from kuaimod_open.ingest.sample import SamplingMode
from kuaimod_open.judge.backends.base import GenerateConfig
from kuaimod_open.judge.pipeline import ModerationConfig
from kuaimod_open.serving.access import check_secret_file, is_loopback


def read_keys(key_file: Path | None) -> frozenset[str]:
    """API keys from --key-file (one per line, '#' comments) and $KUAIMOD_SERVE_KEYS (comma-separated)."""
    keys = [k.strip() for k in os.environ.get("KUAIMOD_SERVE_KEYS", "").split(",")]
    if key_file is not None:
        check_secret_file(key_file)
        try:
            keys += [line.split("#")[0].strip() for line in key_file.read_text(encoding="utf-8").splitlines()]
        except OSError as exc:
            raise ConfigError(f"Cannot read the key file {key_file}: {exc.strerror or exc}") from None
    return frozenset(k for k in keys if k)


@click.command("serve")
@policy_options
@backend_options
@frame_options
@extract_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: all).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--root",
    "roots",
    multiple=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Folder clients may name videos in (repeatable); paths outside every root are refused.",
)
@click.option("--allow-url", "url_prefixes", multiple=True, help="http(s) URL prefix clients may send (repeatable).")
@click.option(
    "--allow-network",
    "allow_networks",
    multiple=True,
    help="Network (CIDR) a URL may lead to although it is not public, e.g. 10.20.0.0/16 (repeatable).",
)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="API keys, one per line (also $KUAIMOD_SERVE_KEYS, comma-separated).",
)
@click.option("--no-auth", is_flag=True, help="Accept requests without an API key (local testing only).")
@click.option("--max-upload-mb", type=click.IntRange(1, 100_000), default=200, show_default=True)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".kuaimod/serve"),
    show_default=True,
    help="Uploads, downloads, frames, feedback.jsonl and verdicts.jsonl go here.",
)
@click.option("--print-openapi", is_flag=True, help="Print the OpenAPI schema and exit (loads no model).")
@click.option(
    "--db",
    default=None,
    envvar="KUAIMOD_DB",
    help="Feedback store whose hash bank decides re-uploads of banked videos first (re-read every 5 minutes).",
)
@first_stage_options
@match_option
def serve_cmd(
    policy: Path | None,
    template: Path | None,
    backend: str,
    model: str | None,
    adapter: Path | None,
    device: str,
    dtype: str,
    base_url: str | None,
    api_key: str | None,
    batch_size: int,
    max_new_tokens: int,
    frames_k: int,
    sampling: str,
    max_side: int,
    ocr: bool,
    asr: bool,
    asr_language: str,
    asr_model: str,
    host: str,
    port: int,
    roots: tuple[Path, ...],
    url_prefixes: tuple[str, ...],
    allow_networks: tuple[str, ...],
    key_file: Path | None,
    no_auth: bool,
    max_upload_mb: int,
    work_dir: Path,
    print_openapi: bool,
    router: Path | None,
    allow_below: float | None,
    flag_at: float | None,
    db: str | None,
    match: bool | None,
) -> None:
    """Serve moderation over HTTP: POST /v1/moderate, /v1/moderate/upload, /v1/feedback; GET /healthz, /metrics.

    \b
    Examples:
      KUAIMOD_SERVE_KEYS=secret kuaimod serve --model /models/Qwen2.5-VL-7B-Instruct --root /data/videos
      kuaimod serve --backend openai --model Qwen/Qwen2.5-VL-7B-Instruct --base-url http://localhost:8000/v1 \
          --key-file keys.txt --root /data/videos --port 8080
    """
    from kuaimod_open.serving.service import ServeSettings, create_app

    pol, tmpl = load_policy_and_template(policy, template)
    if match and not db:
        raise ConfigError("--match needs --db (the store the hash bank lives in)")
    match_on = bool(db) if match is None else match
    keys = read_keys(key_file)
    if no_auth and not is_loopback(host) and not print_openapi:
        raise ConfigError(f"--no-auth is only allowed on a loopback address (127.0.0.1), not {host}: pass API keys")
    if not keys and not no_auth and not print_openapi:
        raise ConfigError("No API keys: pass --key-file FILE or set KUAIMOD_SERVE_KEYS (or --no-auth for local tests)")
    settings = ServeSettings(
        api_keys=keys,
        allow_anonymous=no_auth,
        roots=roots,
        url_prefixes=url_prefixes,
        max_upload_bytes=max_upload_mb << 20,
        work_dir=work_dir,
        feedback_path=work_dir / "feedback.jsonl",
        verdict_log=work_dir / "verdicts.jsonl",
        allow_networks=allow_networks,
    )
    settings.fetch_policy()  # a bad --allow-url or --allow-network fails here, before any model loads
    if print_openapi:
        from kuaimod_open.judge.backends.scripted import ScriptedBackend

        app = create_app(settings, pol, tmpl, ScriptedBackend(), ModerationConfig())
        click.echo(json.dumps(app.openapi(), ensure_ascii=False, indent=2))
        return
    config = ModerationConfig(
        frames=frames_k,
        max_side=max_side,
        sampling=SamplingMode(sampling),
        frames_dir=work_dir / "frames",
        generate=GenerateConfig(max_new_tokens=max_new_tokens, batch_size=batch_size),
        extract=extract_config(ocr, asr, asr_language, asr_model),
        hashing=HashConfig() if match_on else None,
    )
    stage = None
    if match_on and db:
        from kuaimod_open.loop.store import Store

        stage = match_stage(Store(db), pol)
    spec_first = first_stage_spec(router, allow_below, flag_at)
    first_stage = spec_first.load() if spec_first else None  # before any model loads
    model_backend = build_backend(backend, model, adapter, device, dtype, base_url, api_key, batch_size)
    judge = None
    if first_stage is not None:
        from kuaimod_open.first_stage.cascade import cascade_judge

        judge = cascade_judge(first_stage, pol, model_backend, tmpl, config)
    if stage is not None:
        from kuaimod_open.first_stage.match import matching_judge, vlm_judge

        judge = matching_judge(stage, judge or vlm_judge(pol, model_backend, tmpl, config))
    uvicorn = require("uvicorn", extra="serve", purpose="the HTTP service")
    app = create_app(settings, pol, tmpl, model_backend, config, judge)
    uvicorn.run(app, host=host, port=port, log_level="info")


@click.command("openai-server")
@click.argument("model")
@click.option("--served-name", default=None, help="Model name clients must send [default: MODEL].")
@click.option("--device", default="cpu", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--fail-first", type=click.IntRange(0), default=0, help="Answer the first N completions with 503.")
@click.option(
    "--lora-modules",
    multiple=True,
    metavar="NAME=DIR",
    help="Serve a LoRA adapter under NAME (repeatable), like vLLM's --enable-lora --lora-modules.",
)
@click.option(
    "--latency",
    default=None,
    metavar="LOW:HIGH",
    help="Delay each answer by LOW..HIGH seconds (fixed per request, slept concurrently), e.g. 0.2:1.0.",
)
def openai_server_cmd(
    model: str,
    served_name: str | None,
    device: str,
    host: str,
    port: int,
    fail_first: int,
    lora_modules: tuple[str, ...],
    latency: str | None,
) -> None:
    """Serve a local checkpoint (e.g. the tiny model) as an OpenAI-compatible endpoint, for tests.

    \b
    Example:
      kuaimod tiny-model /tmp/tiny && kuaimod openai-server /tmp/tiny --port 8000 &
      kuaimod moderate clips/ --backend openai --model /tmp/tiny --base-url http://127.0.0.1:8000/v1
    """
    from kuaimod_open.errors import ConfigError
    from kuaimod_open.judge.backends import Backend, get_backend
    from kuaimod_open.serving.openai_compat import create_openai_app

    delay = None
    if latency is not None:
        try:
            low, high = (float(x) for x in latency.split(":"))
        except ValueError:
            raise ConfigError(f"--latency {latency!r}: write LOW:HIGH in seconds, e.g. 0.2:1.0") from None
        if not 0 <= low <= high:
            raise ConfigError(f"--latency {latency!r}: need 0 <= LOW <= HIGH")
        delay = (low, high)
    modules: dict[str, str] = {}
    for spec in lora_modules:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise ConfigError(f"--lora-modules {spec!r}: write NAME=DIR")
        modules[name] = folder
    backend = get_backend("hf", model=model, device=device)
    adapters: dict[str, Backend] = {
        name: get_backend("hf", model=model, adapter=folder, device=device) for name, folder in modules.items()
    }
    uvicorn = require("uvicorn", extra="serve", purpose="the OpenAI-compatible test server")
    app = create_openai_app(backend, served_name, fail_first=fail_first, adapters=adapters, latency=delay)
    uvicorn.run(app, host=host, port=port)
