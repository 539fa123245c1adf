"""``kuaimod update ...``: the common-law updaters (safe to run from cron; each records a watermark)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import click

from kuaimod_open.cli.feedback import db_option
from kuaimod_open.cli.options import backend_options, gate_options, store_policy_option, store_policy_path
from kuaimod_open.cli.router import feature_names, features_option
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.backends.base import GenerateConfig
from kuaimod_open.judge.policy import Policy, load_policy
from kuaimod_open.judge.verdict import Verdict
from kuaimod_open.loop.gate import GateConfig
from kuaimod_open.loop.store import Store


@click.group("update")
def update_group() -> None:
    """Turn stored feedback into new policy versions, routers or LoRA adapters, behind an evaluation gate."""


@update_group.command("policy")
@db_option
@store_policy_option
@click.option(
    "--versions-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("prompts/versions"),
    show_default=True,
    help="Where new policy versions, diffs and the CHANGELOG are written.",
)
@click.option("--data", default=None, help="Labelled benchmark rows added to the golden set (JSONL).")
@click.option(
    "--router",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Gate with this first-stage router as the predictor (fast, CPU).",
)
@backend_options
@gate_options
@click.option("--vlm-gate", is_flag=True, help="Gate with the VLM backend (--backend/--model) instead of a router.")
def update_policy_cmd(
    db: str,
    policy: Path | None,
    versions_dir: Path,
    data: str | None,
    router: Path | None,
    backend: str,
    model: str | None,
    adapter: Path | None,
    device: str,
    dtype: str,
    base_url: str | None,
    api_key: str | None,
    batch_size: int,
    max_new_tokens: int,
    gate: GateConfig,
    vlm_gate: bool,
) -> None:
    """Propose a new policy version from disagreements between verdicts and later human decisions.

    The new version is a new file with a diff and a CHANGELOG entry; with a predictor (--router or
    --vlm-gate) it is evaluated against the current policy on the golden set and promoted only if
    it passes the gate.
    """
    from kuaimod_open.ingest.benchmark import load_eval_data
    from kuaimod_open.loop.gate import golden_set
    from kuaimod_open.loop.updaters.policy import update_policy

    store = Store(db)
    base_path = store_policy_path(store, policy)
    base = load_policy(base_path)
    predictor: Callable[[Sequence[Sample], Policy], list[Verdict]] | None = None
    if router is not None:
        from kuaimod_open.first_stage.router import load_router

        loaded = load_router(router)
        predictor = loaded.verdicts
    elif vlm_gate:
        from kuaimod_open.cli.options import build_backend
        from kuaimod_open.judge.pipeline import ModerationConfig, moderate
        from kuaimod_open.judge.prompt import load_template

        vlm = build_backend(backend, model, adapter, device, dtype, base_url, api_key, batch_size)
        template = load_template()
        run_config = ModerationConfig(generate=GenerateConfig(max_new_tokens=max_new_tokens, batch_size=batch_size))
        from kuaimod_open.core.progress import track

        def vlm_predictor(samples: Sequence[Sample], pol: Policy) -> list[Verdict]:
            verdicts = moderate(samples, pol, vlm, template, run_config)
            return list(track(verdicts, total=len(samples), desc=f"gate: policy {pol.version}", unit="video"))

        predictor = vlm_predictor

    benchmark = load_eval_data(data)[0] if data else []
    golden = golden_set(store, base, benchmark)
    result = update_policy(store, base_path, versions_dir, predictor=predictor, golden=golden, gate_config=gate)
    for change in result.changes[:30]:
        click.echo(f"  {change}")
    if result.diff_path is not None:
        click.echo(f"diff: {result.diff_path}")
    click.echo(result.message)


@update_group.command("router")
@db_option
@store_policy_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("routers"),
    show_default=True,
    help="Folder that receives one sub-folder per trained router.",
)
@click.option("--data", default=None, help="Labelled benchmark rows added to the golden set (JSONL or hf://...).")
@click.option(
    "--train-data",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Extra labelled KuaiMod-format rows to train on besides the decisions (repeatable; golden rows are dropped).",
)
@features_option
@click.option("--holdout", type=click.FloatRange(0.0, 0.9), default=0.2, show_default=True)
@click.option("--force", is_flag=True, help="Retrain even when no new decisions arrived.")
@gate_options
def update_router_cmd(
    db: str,
    policy: Path | None,
    out: Path,
    data: str | None,
    train_data: tuple[Path, ...],
    features: str,
    holdout: float,
    force: bool,
    gate: GateConfig,
) -> None:
    """Retrain the first-stage router with the new human decisions; promote it only through the gate.

    Training rows: decided samples not held out for the gate, plus --train-data. The candidate and the
    active router both score the golden set (held-out decisions + --data rows); the decision is stored.

    \b
    Examples:
      kuaimod update router --db sqlite:///kuaimod.db --data benchmark.jsonl
      kuaimod update router --db sqlite:///kuaimod.db --train-data extra.jsonl --features tfidf
    """
    from kuaimod_open.first_stage.model import RouterConfig
    from kuaimod_open.ingest.benchmark import load_benchmark, load_eval_data
    from kuaimod_open.loop.gate import golden_set
    from kuaimod_open.loop.updaters.router import update_router

    store = Store(db)
    pol = load_policy(store_policy_path(store, policy))
    names = feature_names(features)
    benchmark = load_eval_data(data)[0] if data else []
    extra = [s for path in train_data for s in load_benchmark(path)]
    result = update_router(
        store,
        pol,
        out,
        golden=golden_set(store, pol, benchmark, holdout=holdout),
        extra_train=extra,
        config=RouterConfig.model_validate({"features": names}),
        gate_config=gate,
        holdout=holdout,
        force=force,
    )
    click.echo(result.message)


from kuaimod_open.cli.update_lora import lora_cmd  # noqa: E402  # after the group exists; the module defines the command only

update_group.add_command(lora_cmd)
