"""``kuaimod moderate`` and ``kuaimod tiny-model``."""

from __future__ import annotations

from pathlib import Path

import click

from ..backends.base import GenerateConfig
from ..ingest import Sample, SamplingMode, discover_inputs, load_benchmark, video_sample_ids
from ..pipeline import ModerationConfig, RunSummary, run_batch
from .options import backend_options, build_backend, frame_options, load_policy_and_template, policy_options


@click.command("moderate")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@policy_options
@backend_options
@frame_options
@click.option(
    "--frames-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="For .jsonl inputs: folder holding the frame images named in each row's 'images'.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("verdicts.jsonl"),
    show_default=True,
    help="Append-only JSONL of verdicts; re-running skips ids already in it.",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where sampled frames are saved [default: <out>.frames/].",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
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
    frames_root: Path | None,
    out: Path,
    work_dir: Path | None,
    progress: bool,
) -> None:
    r"""Moderate videos (files or folders) or KuaiMod-format .jsonl rows; one verdict JSON line each.

    \b
    Examples:
      kuaimod moderate clips/ --out verdicts.jsonl
      kuaimod moderate a.mp4 --backend openai --model Qwen/Qwen2.5-VL-7B-Instruct --base-url http://localhost:8000/v1
      kuaimod tiny-model /tmp/tiny && kuaimod moderate a.mp4 --model /tmp/tiny
    """
    pol, tmpl = load_policy_and_template(policy, template)
    samples = collect_samples(inputs, frames_root)
    config = ModerationConfig(
        frames=frames_k,
        max_side=max_side,
        sampling=SamplingMode(sampling),
        frames_dir=work_dir or out.with_name(out.name + ".frames"),
        generate=GenerateConfig(max_new_tokens=max_new_tokens, batch_size=batch_size),
    )
    model_backend = build_backend(backend, model, adapter, device, dtype, base_url, api_key, batch_size)
    summary = run_batch(samples, pol, model_backend, tmpl, out, config, progress=progress)
    print_summary(summary, out)


def collect_samples(inputs: tuple[Path, ...], frames_root: Path | None) -> list[Sample]:
    """Videos (files, folders) become video Samples; .jsonl files are read as benchmark rows."""
    samples: list[Sample] = []
    rows = [p for p in inputs if p.suffix.lower() == ".jsonl"]
    for path in rows:
        samples.extend(load_benchmark(path, frames_root))
    others = [p for p in inputs if p.suffix.lower() != ".jsonl"]
    if others:
        videos = discover_inputs(others)
        samples.extend(Sample(id=sid, video=p) for sid, p in zip(video_sample_ids(videos), videos, strict=True))
    return samples


def print_summary(summary: RunSummary, out: Path) -> None:
    """A short table of what the run did."""
    click.echo(
        f"\n{summary.written} verdicts written to {out} "
        f"({summary.skipped} already done, {summary.total} inputs, {summary.seconds:.1f}s)"
    )
    for title, counts in (
        ("decision", summary.decisions),
        ("category", summary.categories),
        ("parse status", summary.statuses),
    ):
        if counts:
            click.echo(f"  {title:<13}" + "  ".join(f"{k}={v}" for k, v in counts.most_common()))
    for err in summary.errors[:10]:
        click.echo(f"  error  {err['sample_id']}: {err['error'][:160]}")
    if len(summary.errors) > 10:
        click.echo(f"  ... and {len(summary.errors) - 10} more errors (see the verdict file)")


@click.command("tiny-model")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True)
def tiny_model_cmd(out_dir: Path, seed: int) -> None:
    """Build a tiny random Qwen2-VL checkpoint in OUT_DIR (offline, ~1 MB) for smoke tests.

    Its answers are random tokens, so its verdicts are 'unparsed' and go to review.
    """
    from ..backends.tiny import build_tiny_qwen2vl

    path = build_tiny_qwen2vl(out_dir, seed=seed)
    click.echo(f"tiny Qwen2-VL written to {path}; use it with: kuaimod moderate VIDEO --model {path}")
