"""``kuaimod eval``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click

from kuaimod_open.cli.confidence import confidence_options, generate_config
from kuaimod_open.cli.options import (
    backend_options,
    build_backend,
    frame_options,
    load_policy_and_template,
    open_store,
    policy_options,
    verdict_db_option,
)
from kuaimod_open.errors import ConfigError
from kuaimod_open.evaluation.metrics import evaluate
from kuaimod_open.evaluation.official import official_binary, official_multi, read_predictions
from kuaimod_open.evaluation.report import write_predictions, write_report
from kuaimod_open.ingest.benchmark import DEFAULT_SPLIT, load_eval_data
from kuaimod_open.ingest.manifest import WorkItem
from kuaimod_open.ingest.sample import SamplingMode
from kuaimod_open.judge.pipeline import ModelRef, ModerationConfig
from kuaimod_open.serving.runner import RunnerConfig, run_job
from kuaimod_open.serving.writer import completed_ids, read_verdicts

# A router deciding alone scores this many rows per call (its per-call overhead dominates).
ROUTER_BATCH = 256

TEXT_ONLY_NOTE = (
    "text-only mode: no frame images were found for any sample, so the judge sees title, OCR and ASR only "
    "(pass --frames-root with the benchmark's images to include frames)"
)


def data_options(func: Any) -> Any:
    """--data, --frames-root, --limit, --split."""
    func = click.option(
        "--split",
        default=DEFAULT_SPLIT,
        show_default=True,
        help="For a dataset folder or hub id: which split's rows to use.",
    )(func)
    func = click.option("--limit", type=click.IntRange(1), default=None, help="Use only the first N rows.")(func)
    func = click.option(
        "--frames-root",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Folder with the frame images named in each row [default: images/ next to a .jsonl file; for a "
        "dataset, its images folder or images.tar.gz].",
    )(func)
    func = click.option(
        "--data",
        default=None,
        help="Benchmark: a KuaiMod-format .jsonl (pid, tag, title, OCR, ASR, images), a dataset folder, or "
        "hf://KuaiMod/KuaiMod (rows and frames through `datasets`).",
    )(func)
    return func


def router_option(func: Any) -> Any:
    """--router."""
    return click.option(
        "--router",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Use a trained first-stage router (kuaimod train-router) instead of the VLM.",
    )(func)


@click.command("eval")
@click.option(
    "--predictions",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Score an official-format file ({'tag', 'judgement'} per line) exactly like the official scripts.",
)
@click.option(
    "--mode",
    type=click.Choice(["binary", "multi", "both"]),
    default="both",
    show_default=True,
    help="With --predictions: which official script to reproduce.",
)
@data_options
@click.option(
    "--verdicts",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Score an existing verdict file (from kuaimod moderate) against --data instead of running a model.",
)
@router_option
@policy_options
@backend_options
@frame_options
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Report folder: report.json, report.md, plots, verdicts and official prediction files "
    "[default: eval_report/; with --predictions: print only unless given].",
)
@click.option("--resume", is_flag=True, help="Continue a run whose verdicts.jsonl is already in the report folder.")
@click.option("--plots/--no-plots", default=True, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
@verdict_db_option
@confidence_options
def eval_cmd(
    predictions: Path | None,
    mode: str,
    data: str | None,
    frames_root: Path | None,
    limit: int | None,
    split: str,
    verdicts: Path | None,
    router: Path | None,
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
    report_dir: Path | None,
    resume: bool,
    plots: bool,
    progress: bool,
    db: str | None,
    logprobs: bool,
    confidence_calibration: Path | None,
) -> None:
    """Evaluate on the KuaiMod benchmark with the official metrics plus per-category reports.

    \b
    Examples:
      kuaimod eval --predictions preds.jsonl                      # official scripts' numbers
      kuaimod eval --data bench.jsonl --model Qwen/Qwen2.5-VL-7B-Instruct --report runs/qwen7b
      kuaimod eval --data bench.jsonl --router routers/v1 --report runs/router
      kuaimod eval --data bench.jsonl --verdicts verdicts.jsonl --report runs/existing
    """
    if predictions is not None:
        _score_predictions(predictions, mode, report_dir)
        return
    report_dir = report_dir or Path("eval_report")
    if data is None:
        raise click.UsageError("pass --data (a benchmark to run on) or --predictions (a file to score)")
    pol, tmpl = load_policy_and_template(policy, template)
    samples, _ = load_eval_data(data, frames_root, split=split)
    samples = samples[:limit] if limit else samples
    for sample in samples:  # unknown gold tags fail before any model is loaded
        if sample.label is not None:
            pol.by_tag(sample.label)
    text_only = all(not s.frames for s in samples)
    if text_only:
        click.secho(TEXT_ONLY_NOTE, fg="yellow", err=True)
    report_dir.mkdir(parents=True, exist_ok=True)
    out = report_dir / "verdicts.jsonl"
    run_config: dict[str, Any] = {
        "data": data,
        "split": split,
        "limit": limit,
        "n": len(samples),
        "policy": str(policy or "default"),
        "template": str(template or "default"),
        "text_only": text_only,
    }
    if verdicts is not None:
        results = read_verdicts(verdicts)
        run_config["verdicts"] = str(verdicts)
    else:
        if out.exists() and completed_ids(out) and not resume:
            raise ConfigError(f"{out} already holds verdicts: pass --resume to continue that run, or another --report")
        store = open_store(db)
        items = [WorkItem(s) for s in samples]
        runner = RunnerConfig(workers=0, progress=progress)  # benchmark rows: frames are files already
        if router is not None:
            from kuaimod_open.first_stage.router import load_router

            loaded = load_router(router)
            run_job(
                items,
                pol,
                None,
                tmpl,
                out,
                runner=dataclasses.replace(runner, judge_batch=ROUTER_BATCH),
                judge=lambda batch: loaded.verdicts(batch, pol),
                model=ModelRef(loaded.model_id),
                store=store,
                desc="evaluating",
            )
            run_config["router"] = str(router)
        else:
            generate, calibration = generate_config(max_new_tokens, batch_size, logprobs, confidence_calibration)
            config = ModerationConfig(
                frames=frames_k,
                max_side=max_side,
                sampling=SamplingMode(sampling),
                frames_dir=report_dir / "frames",
                generate=generate,
                confidence_calibration=calibration,
            )
            model_backend = build_backend(backend, model, adapter, device, dtype, base_url, api_key, batch_size)
            run_job(items, pol, model_backend, tmpl, out, config, runner, store=store, desc="evaluating")
            run_config.update(
                {
                    "backend": backend,
                    "model": model_backend.model_id,
                    "adapter": model_backend.adapter,
                    "frames": frames_k,
                    "max_new_tokens": max_new_tokens,
                    "batch_size": batch_size,
                }
            )
        results = read_verdicts(out)
    report = evaluate(samples, results, pol, config=run_config)
    write_predictions(report_dir, samples, results, pol)
    paths = write_report(report, report_dir, plots=plots)
    click.echo(report.official_binary.text())
    click.echo(f"\nmulti-class (official, coverage {report.official_multi.coverage:.1%}):")
    click.echo(report.official_multi.text())
    sb = report.strict_binary
    click.echo(
        f"\nstrict binary (no answer = wrong): accuracy {sb.accuracy:.4f}, violative recall "
        f"{sb.violative_recall:.4f}, answered {sb.answered}/{sb.n}"
    )
    click.echo(
        f"category accuracy {report.category_accuracy:.4f}, macro-F1 {report.macro_f1:.4f}, "
        f"review share {report.review_share:.1%}"
    )
    if text_only:
        click.echo(TEXT_ONLY_NOTE)
    click.echo("report: " + ", ".join(str(p) for p in paths))


def _score_predictions(path: Path, mode: str, report_dir: Path | None) -> None:
    rows = read_predictions(path)
    result: dict[str, Any] = {}
    if mode in ("binary", "both"):
        binary = official_binary(rows)
        click.echo(binary.text())
        result["binary"] = binary.model_dump()
    if mode in ("multi", "both"):
        multi = official_multi(rows)
        if mode == "both":
            click.echo("")
        click.echo(multi.text())
        click.echo(
            f"(multi-class coverage: {multi.n_matched}/{multi.n_total} rows contained a known tag; "
            "the official script skips the rest)"
        )
        result["multi"] = multi.model_dump() | {"coverage": multi.coverage}
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / "official.json").write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
