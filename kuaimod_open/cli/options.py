"""Options shared by several commands (policy, template, backend, frames, gate)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from kuaimod_open.errors import ConfigError
from kuaimod_open.ingest.sample import DEFAULT_FRAMES, DEFAULT_MAX_SIDE, SamplingMode
from kuaimod_open.judge.backends import BACKENDS, DEFAULT_HF_MODEL, Backend, get_backend
from kuaimod_open.judge.policy import Policy, default_policy_path, load_policy
from kuaimod_open.judge.prompt import Template, load_template
from kuaimod_open.loop.gate import TARGETS, GateConfig

F = TypeVar("F", bound=Callable[..., Any])


def policy_options(func: F) -> F:
    """--policy and --template."""
    func = click.option(
        "--template",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Prompt template file [default: prompts/moderation.md].",
    )(func)
    func = click.option(
        "--policy",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Policy YAML file [default: prompts/policy.yaml].",
    )(func)
    return func


def backend_options(func: F) -> F:
    """--backend, --model and the per-backend settings."""
    options = [
        click.option(
            "--backend",
            type=click.Choice(sorted(set(BACKENDS) - {"scripted"})),
            default="hf",
            show_default=True,
            help="hf: local transformers model; openai: any OpenAI-compatible server (vLLM, SGLang).",
        ),
        click.option(
            "--model",
            default=None,
            help=f"Hub id or local directory [hf default: {DEFAULT_HF_MODEL}]; served model name for --backend openai.",
        ),
        click.option(
            "--adapter",
            type=click.Path(path_type=Path),
            default=None,
            help="LoRA adapter: a directory (hf); for openai the server's LoRA module name (vLLM --lora-modules "
            "NAME=DIR), or its directory, whose folder name is the NAME.",
        ),
        click.option("--device", default="auto", show_default=True, help="hf: cuda, cuda:1, cpu or auto."),
        click.option("--dtype", default="auto", show_default=True, help="hf: bfloat16, float16, float32 or auto."),
        click.option(
            "--base-url",
            default=None,
            envvar=["KUAIMOD_BASE_URL", "OPENAI_BASE_URL"],
            help="openai: server URL, e.g. http://localhost:8000/v1.",
        ),
        click.option(
            "--api-key",
            default=None,
            envvar=["KUAIMOD_API_KEY", "OPENAI_API_KEY"],
            help="openai: API key (read from the environment by default).",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(1, 512),
            default=4,
            show_default=True,
            help="Samples per generate call (hf) or concurrent requests (openai).",
        ),
        click.option("--max-new-tokens", type=click.IntRange(1, 32768), default=1024, show_default=True),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def frame_options(func: F) -> F:
    """--frames, --sampling, --max-side."""
    func = click.option(
        "--max-side",
        type=click.IntRange(64, 4096),
        default=DEFAULT_MAX_SIDE,
        show_default=True,
        help="Longest side of saved frames, in pixels.",
    )(func)
    func = click.option(
        "--sampling",
        type=click.Choice([m.value for m in SamplingMode]),
        default="uniform",
        show_default=True,
        help="uniform: evenly spread; scene: one frame per detected shot; keyframe: nearest key frames (fastest).",
    )(func)
    func = click.option(
        "--frames",
        "frames_k",
        type=click.IntRange(1, 64),
        default=DEFAULT_FRAMES,
        show_default=True,
        help="Frames per video, plus the first frame.",
    )(func)
    return func


def load_policy_and_template(policy: Path | None, template: Path | None) -> tuple[Policy, Template]:
    """Validate both files before any model is loaded."""
    return load_policy(policy or default_policy_path()), load_template(template)


def build_backend(
    backend: str,
    model: str | None,
    adapter: Path | None,
    device: str,
    dtype: str,
    base_url: str | None,
    api_key: str | None,
    batch_size: int,
) -> Backend:
    """Construct the chosen backend from CLI values."""
    if backend == "hf":
        return get_backend(
            "hf", model=model or DEFAULT_HF_MODEL, adapter=str(adapter) if adapter else None, device=device, dtype=dtype
        )
    if backend == "openai":
        if not model:
            raise ConfigError("--backend openai needs --model (the model name the server serves)")
        return get_backend(
            "openai",
            model=model,
            base_url=base_url,
            api_key=api_key,
            adapter=str(adapter) if adapter else None,
            concurrency=batch_size,
        )
    raise ConfigError(f"unknown backend {backend}")


def gate_options(func: F) -> F:
    """The evaluation gate's flags, handed to the command as one ``gate: GateConfig`` argument.

    --target, --min-improvement, --tolerance, --min-lost, --benign-tolerance, --max-review-increase.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["gate"] = GateConfig(
            target=kwargs.pop("target"),
            min_improvement=kwargs.pop("min_improvement"),
            category_tolerance=kwargs.pop("tolerance"),
            min_lost=kwargs.pop("min_lost"),
            benign_tolerance=kwargs.pop("benign_tolerance"),
            max_review_increase=kwargs.pop("max_review_increase"),
        )
        return func(*args, **kwargs)

    options = [
        click.option(
            "--target",
            type=click.Choice(list(TARGETS)),
            default="strict_accuracy",
            show_default=True,
            help="Metric the candidate must improve on the golden set.",
        ),
        click.option("--min-improvement", type=float, default=0.0, show_default=True),
        click.option(
            "--tolerance",
            type=float,
            default=0.02,
            show_default=True,
            help="Largest allowed recall drop of any violation category (with >= 3 golden samples).",
        ),
        click.option(
            "--min-lost",
            type=click.IntRange(1),
            default=2,
            show_default=True,
            help="A category regresses only if the candidate also misses this many more of its golden samples.",
        ),
        click.option(
            "--benign-tolerance",
            type=float,
            default=0.10,
            show_default=True,
            help="Largest allowed drop of benign recall (growth of false flags).",
        ),
        click.option("--max-review-increase", type=float, default=0.05, show_default=True),
    ]
    decorated: Any = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]


def store_policy_option(func: F) -> F:
    """--policy for commands that work on a feedback store (default: the store's active policy)."""
    return click.option(
        "--policy",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Policy [default: the active policy in the store, else prompts/policy.yaml].",
    )(func)


def store_policy_path(store: Any, policy: Path | None) -> Path:
    """``--policy`` if given, else the store's active policy (the shipped one is registered on first use)."""
    from kuaimod_open.loop.registry import active_policy

    return policy or active_policy(store, default=default_policy_path())[1]
