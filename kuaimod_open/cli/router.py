"""``kuaimod train-router`` and ``kuaimod cascade``: the cheap first stage."""

from __future__ import annotations

import json
from pathlib import Path

import click

from kuaimod_open.cli.confidence import confidence_options, generate_config
from kuaimod_open.cli.options import F, backend_options, build_backend, load_policy_and_template, policy_options
from kuaimod_open.ingest.benchmark import load_benchmark
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.flags import Flag
from kuaimod_open.judge.pipeline import ModerationConfig
from kuaimod_open.judge.policy import default_policy_path, load_policy


def features_option(func: F) -> F:
    """--features (the router's feature families)."""
    return click.option(
        "--features",
        default="tfidf,e5,knn",
        show_default=True,
        help="Comma-separated: tfidf (char n-grams), e5 (e5-small embeddings, cached), knn (nearest-row vote).",
    )(func)


def feature_names(features: str) -> list[str]:
    """The --features value as a list; unknown or empty is a usage error."""
    names = [f.strip() for f in features.split(",") if f.strip()]
    unknown = sorted(set(names) - {"tfidf", "e5", "knn"})
    if unknown or not names:
        raise click.BadParameter(f"unknown feature(s) {unknown or names}; use tfidf, e5, knn", param_hint="--features")
    return names


@click.command("train-router")
@click.option(
    "--data",
    "data",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Labelled KuaiMod-format JSONL (pid, tag, title, OCR, ASR); repeat to combine files.",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Router folder to write.")
@click.option("--policy", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Policy YAML file.")
@features_option
@click.option(
    "--max-missed",
    type=click.FloatRange(0, 1),
    default=0.02,
    show_default=True,
    help="Cascade target: share of violations the router may auto-allow.",
)
@click.option(
    "--max-false-flag",
    type=click.FloatRange(0, 1),
    default=0.02,
    show_default=True,
    help="Cascade target: share of benign videos the router may auto-flag.",
)
@click.option(
    "--min-recall",
    type=click.FloatRange(0, 1),
    default=None,
    help="Set the decision threshold for this violative recall [default: p >= 0.5].",
)
@click.option("--calibration", type=click.Choice(["auto", "sigmoid", "isotonic"]), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(1, 64), default=2, show_default=True, help="Embedding threads.")
def train_router_cmd(
    data: tuple[Path, ...],
    out: Path,
    policy: Path | None,
    features: str,
    max_missed: float,
    max_false_flag: float,
    min_recall: float | None,
    calibration: str,
    threads: int,
) -> None:
    """Train the first-stage router on labelled rows and save it (model card: router.json).

    \b
    Examples:
      kuaimod train-router --data train.jsonl --out routers/v1
      kuaimod train-router --data train.jsonl --out routers/tfidf --features tfidf --max-missed 0.01
    """
    from kuaimod_open.first_stage.router import RouterConfig, train_router

    pol = load_policy(policy or default_policy_path())
    samples: list[Sample] = []
    for path in data:
        samples.extend(load_benchmark(path))
    names = feature_names(features)
    config = RouterConfig.model_validate(
        {
            "features": names,
            "max_missed": max_missed,
            "max_false_flag": max_false_flag,
            "min_recall": min_recall,
            "calibration": calibration,
            "embed_threads": threads,
        }
    )
    router = train_router(samples, pol, config)
    router.save(out)
    card = router.card
    click.echo(f"router {router.model_id} trained on {card.n_train} rows in {card.timing_s['total']:.1f}s -> {out}")
    click.echo("  out-of-fold: " + "  ".join(f"{k}={v}" for k, v in card.metrics.items()))
    t = card.thresholds
    click.echo(f"  thresholds: decision={t.decision:.3f} allow_below={t.allow_below:.3f} flag_at={t.flag_at:.3f}")


@click.command("cascade")
@click.argument("data", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--router", type=click.Path(file_okay=False, path_type=Path), required=True, help="Router folder.")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("verdicts.jsonl"), show_default=True
)
@click.option(
    "--frames-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder with the frame images named in each row (for escalated videos).",
)
@click.option("--allow-below", type=click.FloatRange(0, 1), default=None, help="Override the card's allow threshold.")
@click.option("--flag-at", type=click.FloatRange(0, 1.001), default=None, help="Override the card's flag threshold.")
@click.option(
    "--vlm/--no-vlm",
    default=False,
    show_default=True,
    help="Escalate to the VLM (--backend/--model); else escalated videos go to review.",
)
@policy_options
@backend_options
@confidence_options
def cascade_cmd(
    data: Path,
    router: Path,
    out: Path,
    frames_root: Path | None,
    allow_below: float | None,
    flag_at: float | None,
    vlm: bool,
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
    logprobs: bool,
    confidence_calibration: Path | None,
) -> None:
    """Moderate KuaiMod-format rows with the router first; only unclear videos reach the VLM.

    \b
    Examples:
      kuaimod cascade rows.jsonl --router routers/v1 --out verdicts.jsonl            # escalated -> review
      kuaimod cascade rows.jsonl --router routers/v1 --vlm --model Qwen/Qwen2.5-VL-7B-Instruct
    """
    from kuaimod_open.first_stage.cascade import cascade_config, run_cascade
    from kuaimod_open.first_stage.router import load_router

    pol, tmpl = load_policy_and_template(policy, template)
    loaded = load_router(router)
    cascade = cascade_config(allow_below, flag_at)
    cascade.thresholds(loaded)  # overlapping thresholds fail before any model loads
    samples = load_benchmark(data, frames_root)
    vlm_backend = None
    moderation = None
    if vlm:
        # Log-probabilities only when asked for (--logprobs, or a calibration that needs them), as in moderate.
        generate, calibration = generate_config(max_new_tokens, batch_size, logprobs, confidence_calibration)
        vlm_backend = build_backend(backend, model, adapter, device, dtype, base_url, api_key, batch_size)
        moderation = ModerationConfig(
            frames_dir=out.with_name(out.name + ".frames"), generate=generate, confidence_calibration=calibration
        )
    verdicts = run_cascade(
        samples,
        pol,
        loaded,
        backend=vlm_backend,
        template=tmpl if vlm else None,
        moderation=moderation,
        config=cascade,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for verdict in verdicts:
            handle.write(verdict.model_dump_json() + "\n")
    stages: dict[str, int] = {}
    decisions: dict[str, int] = {}
    for v in verdicts:
        stages[str(v.stage)] = stages.get(str(v.stage), 0) + 1
        decisions[str(v.decision)] = decisions.get(str(v.decision), 0) + 1
    escalated = sum(Flag.ESCALATED in v.flags for v in verdicts)
    click.echo(f"{len(verdicts)} verdicts written to {out}; escalated {escalated}")
    click.echo(f"  stage     {json.dumps(stages)}\n  decision  {json.dumps(decisions)}")
