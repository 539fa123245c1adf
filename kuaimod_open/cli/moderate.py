"""``kuaimod moderate`` and ``kuaimod tiny-model``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from kuaimod_open.cli.confidence import confidence_options, generate_config
from kuaimod_open.cli.options import (
    backend_options,
    build_backend,
    frame_options,
    load_policy_and_template,
    policy_options,
    store_policy_path,
)
from kuaimod_open.errors import ConfigError
from kuaimod_open.ingest.extract import OFFLINE_WHISPER, ExtractConfig, check_available
from kuaimod_open.ingest.fetch import FetchPolicy
from kuaimod_open.ingest.manifest import collect_items
from kuaimod_open.ingest.pdq import HashConfig
from kuaimod_open.ingest.sample import SamplingMode
from kuaimod_open.judge.backends import DEFAULT_HF_MODEL
from kuaimod_open.judge.pipeline import ModerationConfig, RunSummary
from kuaimod_open.serving.runner import JobSummary, RunnerConfig, run_job

if TYPE_CHECKING:
    from kuaimod_open.first_stage.cascade import FirstStage
    from kuaimod_open.first_stage.match import MatchStage
    from kuaimod_open.serving.ray_engine import BackendSpec

F = TypeVar("F", bound=Callable[..., Any])


def first_stage_options(func: F) -> F:
    """--router, --allow-below, --flag-at (the cascade in front of the VLM)."""
    options = [
        click.option(
            "--router",
            type=click.Path(file_okay=False, exists=True, path_type=Path),
            default=None,
            help="Cascade: this first-stage router (kuaimod train-router / update router) decides the clear "
            "cases from the title/OCR/ASR; only the rest reach the VLM.",
        ),
        click.option(
            "--allow-below", type=click.FloatRange(0, 1), default=None, help="With --router: override the card."
        ),
        click.option(
            "--flag-at", type=click.FloatRange(0, 1.001), default=None, help="With --router: override the card."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def match_option(func: F) -> F:
    """--match/--no-match (the hash bank in front of every other stage)."""
    return click.option(
        "--match/--no-match",
        default=None,
        help="Hash every video (PDQ, 1 fps; stored with the sample so a reviewer's block can bank it) and decide "
        "re-uploads of banked videos before any model [default: on with --db].",
    )(func)


def match_stage(store: Any, policy: Any) -> MatchStage:
    """The hash bank of ``store`` in memory, re-read every 5 minutes by long-running services."""
    from kuaimod_open.first_stage.match import MatchStage
    from kuaimod_open.loop.bank import load_bank

    distance = policy.matching.max_distance

    def reload() -> Any:
        return load_bank(store, max_distance=distance)

    return MatchStage(reload(), policy, reload=reload)


def extract_options(func: F) -> F:
    """--ocr/--no-ocr, --asr/--no-asr, --asr-language, --asr-model."""
    options = [
        click.option(
            "--ocr/--no-ocr", default=True, show_default=True, help="OCR the sampled frames of videos without OCR text."
        ),
        click.option("--asr/--no-asr", default=True, show_default=True, help="Transcribe videos without ASR text."),
        click.option(
            "--asr-language",
            default="zh",
            show_default=True,
            help="Whisper language code (zh, en, ...) or 'auto' to detect (unreliable on short clips).",
        ),
        click.option(
            "--asr-model",
            default=OFFLINE_WHISPER,
            show_default=True,
            help="faster-whisper model name or directory; 'whisper-base' is the offline model from PyPI.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def extract_config(ocr: bool, asr: bool, asr_language: str, asr_model: str) -> ExtractConfig | None:
    """The ExtractConfig for the flags (None when both are off), its packages checked up front."""
    if not (ocr or asr):
        return None
    language = None if asr_language.lower() in ("auto", "") else asr_language
    config = ExtractConfig(ocr=ocr, asr=asr, asr_language=language, asr_model=asr_model)
    check_available(config)
    return config


@click.command("moderate")
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@policy_options
@backend_options
@frame_options
@extract_options
@click.option(
    "--manifest",
    "manifests",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="CSV / JSONL / Parquet with id, path or url, title, ocr, asr, comments, label (repeatable).",
)
@click.option(
    "--frames-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="For benchmark rows: folder holding the frame images named in each row's 'images'.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("verdicts.jsonl"),
    show_default=True,
    help="Append-only JSONL of verdicts; re-running skips ids already in it.",
)
@click.option(
    "--parquet",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write all verdicts of --out as Parquet here when the job ends.",
)
@click.option(
    "--workers",
    type=click.IntRange(0, 256),
    default=1,
    show_default=True,
    help="Processes that decode and extract while the model runs; 0: all in this process.",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where sampled frames are saved [default: <out>.frames/].",
)
@click.option(
    "--db",
    default=None,
    envvar="KUAIMOD_DB",
    help="Also record samples and verdicts in this feedback store (sqlite:///kuaimod.db); without --policy, "
    "the store's active policy is used.",
)
@click.option(
    "--precedents",
    "precedents_k",
    type=click.IntRange(0, 20),
    default=0,
    show_default=True,
    help="With --db: show the K most similar decided cases (precedents) in each prompt.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: worker processes on this machine; ray: a Ray Data pipeline (--ray-address or a local Ray).",
)
@click.option(
    "--ray-address", default=None, help="Ray cluster address [default: $RAY_ADDRESS, else start a local Ray]."
)
@click.option("--ray-actors", type=click.IntRange(1, 1024), default=1, show_default=True, help="Model replicas.")
@click.option("--ray-gpus-per-actor", type=click.FloatRange(0, 8), default=0.0, show_default=True)
@click.option(
    "--allow-url",
    "url_prefixes",
    multiple=True,
    help="Only fetch manifest URLs under this prefix (repeatable) [default: any public http(s) URL].",
)
@click.option(
    "--allow-network",
    "allow_networks",
    multiple=True,
    help="Network (CIDR) manifest URLs may lead to although it is not public, e.g. 10.20.0.0/16 (repeatable).",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
@first_stage_options
@match_option
@confidence_options
def moderate_cmd(
    inputs: tuple[Path, ...],
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
    manifests: tuple[Path, ...],
    frames_root: Path | None,
    out: Path,
    parquet: Path | None,
    workers: int,
    work_dir: Path | None,
    db: str | None,
    precedents_k: int,
    engine: str,
    ray_address: str | None,
    ray_actors: int,
    ray_gpus_per_actor: float,
    url_prefixes: tuple[str, ...],
    allow_networks: tuple[str, ...],
    progress: bool,
    router: Path | None,
    allow_below: float | None,
    flag_at: float | None,
    match: bool | None,
    logprobs: bool,
    confidence_calibration: Path | None,
) -> None:
    """Moderate videos (files, folders, manifests) or KuaiMod-format .jsonl rows; one verdict JSON line each.

    \b
    Examples:
      kuaimod moderate clips/ --out verdicts.jsonl
      kuaimod moderate --manifest nightly.parquet --workers 4 --out runs/nightly.jsonl --parquet runs/nightly.parquet
      kuaimod moderate a.mp4 --backend openai --model Qwen/Qwen2.5-VL-7B-Instruct --base-url http://localhost:8000/v1
      kuaimod tiny-model /tmp/tiny && kuaimod moderate a.mp4 --model /tmp/tiny
      kuaimod moderate --manifest nightly.jsonl --router routers/v1 --model Qwen/Qwen2.5-VL-7B-Instruct
      kuaimod moderate clips/ --db sqlite:///kuaimod.db    # banked re-uploads decided first (stage: match)
    """
    if not inputs and not manifests:
        raise ConfigError("Nothing to moderate: give video files, folders or manifests (--manifest FILE)")
    if precedents_k and not db:
        raise ConfigError("--precedents needs --db (the store the precedents live in)")
    if match and not db:
        raise ConfigError("--match needs --db (the store the hash bank lives in)")
    match_on = bool(db) if match is None else match
    store = None
    if db:
        from kuaimod_open.loop.store import Store

        store = Store(db)
        policy = store_policy_path(store, policy)
    pol, tmpl = load_policy_and_template(policy, template)
    items = collect_items(inputs, manifests, frames_root)
    generate, calibration = generate_config(max_new_tokens, batch_size, logprobs, confidence_calibration)
    config = ModerationConfig(
        frames=frames_k,
        max_side=max_side,
        sampling=SamplingMode(sampling),
        frames_dir=work_dir or out.with_name(out.name + ".frames"),
        generate=generate,
        extract=extract_config(ocr, asr, asr_language, asr_model),
        confidence_calibration=calibration,
        hashing=HashConfig() if match_on else None,
    )
    stage = match_stage(store, pol) if match_on and store is not None else None
    fetch_policy = FetchPolicy(prefixes=url_prefixes, allow_networks=allow_networks)  # bad values fail here
    runner = RunnerConfig(workers=workers, parquet=parquet, progress=progress, fetch=fetch_policy)
    if engine == "ray":
        from kuaimod_open.serving.ray_engine import RayConfig, run_ray_job

        if precedents_k:
            raise ConfigError("--precedents is not supported with --engine ray yet (actors cannot reach the store)")
        spec = backend_spec(backend, model, adapter, device, dtype, base_url, api_key, batch_size)
        ray_config = RayConfig(address=ray_address, model_actors=ray_actors, gpus_per_actor=ray_gpus_per_actor)
        first = first_stage_spec(router, allow_below, flag_at)
        if first is not None:
            first.load()  # a bad router or thresholds fail here, not in an actor
        hooks = store_hooks(store, pol, 0) if store is not None else {}
        summary = run_ray_job(items, pol, tmpl, spec, out, config, runner, ray_config, first, match=stage, **hooks)
    else:
        spec_first = first_stage_spec(router, allow_below, flag_at)
        first_stage = spec_first.load() if spec_first else None  # before any model loads
        model_backend = build_backend(backend, model, adapter, device, dtype, base_url, api_key, batch_size)
        hooks = store_hooks(store, pol, precedents_k) if store is not None else {}
        judge = None
        if first_stage is not None:
            from kuaimod_open.first_stage.cascade import cascade_judge

            judge = cascade_judge(first_stage, pol, model_backend, tmpl, config, hooks.get("precedents"))
        if stage is not None:
            from kuaimod_open.first_stage.match import matching_judge, vlm_judge

            inner = judge or vlm_judge(pol, model_backend, tmpl, config, hooks.get("precedents"))
            judge = matching_judge(stage, inner)
        summary = run_job(items, pol, model_backend, tmpl, out, config, runner, judge=judge, **hooks)
    print_summary(summary, out)


def backend_spec(
    backend: str,
    model: str | None,
    adapter: Path | None,
    device: str,
    dtype: str,
    base_url: str | None,
    api_key: str | None,
    batch_size: int,
) -> BackendSpec:
    """What each Ray model actor builds (the same choices as ``build_backend``)."""
    from kuaimod_open.serving.ray_engine import BackendSpec

    if backend == "hf":
        options = {"model": model or DEFAULT_HF_MODEL, "adapter": str(adapter) if adapter else None}
        return BackendSpec("hf", {**options, "device": device, "dtype": dtype})
    if not model:
        raise ConfigError("--backend openai needs --model (the model name the server serves)")
    served: dict[str, Any] = {"model": model, "base_url": base_url, "api_key": api_key, "concurrency": batch_size}
    return BackendSpec("openai", {**served, "adapter": str(adapter) if adapter else None})


def store_hooks(store: Any, policy: Any, precedents_k: int) -> dict[str, Any]:
    """run_job callbacks that record samples and verdicts, and (k > 0) retrieve precedents."""
    from kuaimod_open.loop.feedback import record_sample, record_verdict

    hooks: dict[str, Any] = {
        "on_sample": lambda sample: record_sample(store, sample),
        "on_verdict": lambda verdict: record_verdict(store, verdict),
    }
    if precedents_k:
        from kuaimod_open.core.embedding import E5Embedder
        from kuaimod_open.loop.precedents import PrecedentIndex

        index = PrecedentIndex(store, E5Embedder(), policy)
        hooks["precedents"] = lambda sample: index.lookup(sample, precedents_k)
    return hooks


def print_summary(summary: RunSummary, out: Path) -> None:
    """A short table of what the run did."""
    rate = f", {summary.written / summary.seconds:.2f} videos/s" if summary.seconds > 0 and summary.written else ""
    click.echo(
        f"\n{summary.written} verdicts written to {out} "
        f"({summary.skipped} already done, {summary.total} inputs, {summary.seconds:.1f}s{rate})"
    )
    if isinstance(summary, JobSummary) and summary.written:
        click.echo(
            f"  time          preparation {summary.prepare_seconds:.1f}s over {max(summary.workers, 1)} process(es), "
            f"inference {summary.inference_seconds:.1f}s"
        )
    for title, counts in (
        ("decision", summary.decisions),
        ("category", summary.categories),
        ("stage", summary.stages),
        ("parse status", summary.statuses),
    ):
        if counts:
            click.echo(f"  {title:<13} " + "  ".join(f"{k}={v}" for k, v in counts.most_common()))
    for err in summary.errors[:10]:
        click.echo(f"  error  {err['sample_id']}: {err['error'][:160]}")
    if len(summary.errors) > 10:
        click.echo(f"  ... and {len(summary.errors) - 10} more errors (see the verdict file)")


@click.command("tiny-model")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--arch",
    type=click.Choice(["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]),
    default="qwen2_vl",
    show_default=True,
    help="Which Qwen-VL family's transformers classes to build.",
)
@click.option(
    "--model-vocab",
    type=click.IntRange(1),
    default=None,
    help="Embedding rows, e.g. 151936 as in Qwen2.5-VL (~80 MB) [default: the tiny tokenizer's ~1k].",
)
@click.option(
    "--bare-generation-config",
    is_flag=True,
    help="No sampling or penalty fields (default: Qwen2.5-VL's published top_k/top_p/temperature/penalty).",
)
def tiny_model_cmd(out_dir: Path, seed: int, arch: str, model_vocab: int | None, bare_generation_config: bool) -> None:
    """Build a tiny random Qwen-VL checkpoint in OUT_DIR (offline, ~1 MB) for smoke tests.

    It mimics a real checkpoint where the code depends on it: Qwen2.5-VL's published generation config,
    the real processors' pixel budget, the real chat template's shape. Its answers are random tokens,
    so its verdicts go to review ('unparsed', or an error when the noise runs to --max-new-tokens).
    """
    from kuaimod_open.judge.backends.tiny import build_tiny_qwen_vl

    generation: dict[str, Any] | None = {} if bare_generation_config else None
    path = build_tiny_qwen_vl(out_dir, arch=arch, seed=seed, model_vocab=model_vocab, generation=generation)
    click.echo(f"tiny {arch} written to {path}; use it with: kuaimod moderate VIDEO --model {path}")


def first_stage_spec(router: Path | None, allow_below: float | None, flag_at: float | None) -> FirstStage | None:
    """The cascade settings of --router/--allow-below/--flag-at (None without --router)."""
    if router is None:
        return None
    from kuaimod_open.first_stage.cascade import FirstStage

    return FirstStage(str(router.resolve()), allow_below, flag_at)
