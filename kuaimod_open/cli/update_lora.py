"""``kuaimod update lora``: train a LoRA adapter from reviewers' decisions, behind the evaluation gate."""

from __future__ import annotations

from pathlib import Path

import click

from kuaimod_open.cli.feedback import db_option
from kuaimod_open.cli.options import gate_options, store_policy_option, store_policy_path
from kuaimod_open.judge.backends import DEFAULT_HF_MODEL, Backend
from kuaimod_open.loop.gate import GateConfig
from kuaimod_open.loop.store import Store


def _summary(losses: list[float]) -> str:
    return f"loss {losses[0]:.4f} -> {losses[-1]:.4f}" if losses else "no steps"


@click.command("lora")
@db_option
@click.option("--model", default=DEFAULT_HF_MODEL, show_default=True, help="Student base model: hub id or local dir.")
@click.option(
    "--teacher-backend",
    type=click.Choice(["hf", "openai"]),
    default="hf",
    show_default=True,
    help="Backend of the teacher that writes the reasoning (Tag2CoT).",
)
@click.option(
    "--teacher-model", required=True, help="Teacher: hub id or local dir (hf), or served model name (openai)."
)
@click.option("--base-url", default=None, envvar=["KUAIMOD_BASE_URL", "OPENAI_BASE_URL"], help="openai teacher URL.")
@click.option("--api-key", default=None, envvar=["KUAIMOD_API_KEY", "OPENAI_API_KEY"], help="openai teacher key.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("adapters"),
    show_default=True,
    help="Folder that receives one sub-folder per trained adapter.",
)
@click.option(
    "--epochs",
    type=click.FloatRange(0, min_open=True),
    default=2.0,
    show_default=True,
    help="SFT passes over the kept chains (the step count follows the data size).",
)
@click.option("--dpo-epochs", type=click.FloatRange(0), default=None, help="DPO passes [default: --epochs; 0 skips].")
@click.option(
    "--max-steps",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="Safety cap on optimizer steps per stage (SFT, DPO).",
)
@click.option("--lr", type=float, default=1e-4, show_default=True, help="SFT learning rate (DPO uses half).")
@click.option("--rank", type=click.IntRange(1), default=16, show_default=True, help="LoRA rank.")
@click.option("--batch-size", type=click.IntRange(1), default=1, show_default=True, help="Training batch per device.")
@click.option("--grad-accum", type=click.IntRange(1), default=4, show_default=True, help="Gradient accumulation.")
@click.option(
    "--max-length",
    type=click.IntRange(64),
    default=None,
    help="Skip (and count) examples longer than this many tokens, frames included; never truncates.",
)
@click.option(
    "--benchmark",
    "--data",
    "benchmark",
    default=None,
    help="Labelled KuaiMod-format JSONL (or hf://...) added to the golden set.",
)
@click.option("--frames-root", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto (training and gate).")
@click.option(
    "--teacher-device",
    default="auto",
    show_default=True,
    help="hf teacher: auto spreads it over every visible GPU (device_map), so large teachers load; or cpu/cuda.",
)
@click.option("--dtype", default="auto", show_default=True, help="bfloat16, float16, float32 or auto.")
@store_policy_option
@click.option("--template", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--tag2cot-template", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--holdout", type=click.FloatRange(0.0, 0.9), default=0.2, show_default=True)
@click.option("--gen-batch-size", type=click.IntRange(1, 512), default=4, show_default=True)
@click.option("--max-new-tokens", type=click.IntRange(1, 32768), default=1024, show_default=True)
@gate_options
def lora_cmd(
    db: str,
    model: str,
    teacher_backend: str,
    teacher_model: str,
    base_url: str | None,
    api_key: str | None,
    out: Path,
    epochs: float,
    dpo_epochs: float | None,
    max_steps: int,
    lr: float,
    rank: int,
    batch_size: int,
    grad_accum: int,
    max_length: int | None,
    benchmark: str | None,
    frames_root: Path | None,
    device: str,
    teacher_device: str,
    dtype: str,
    policy: Path | None,
    template: Path | None,
    tag2cot_template: Path | None,
    holdout: float,
    gen_batch_size: int,
    max_new_tokens: int,
    gate: GateConfig,
) -> None:
    """Teacher chains (Tag2CoT) checked by CoT2Tag -> SFT + DPO LoRA -> gate; activated only if better.

    Safe to run from cron: a run with no reviewer decisions since the last one does nothing.
    """
    from kuaimod_open.cli.options import build_backend
    from kuaimod_open.judge.backends.base import GenerateConfig
    from kuaimod_open.judge.pipeline import ModerationConfig
    from kuaimod_open.judge.policy import load_policy
    from kuaimod_open.judge.prompt import load_template
    from kuaimod_open.loop.updaters.lora import update_lora
    from kuaimod_open.loop.updaters.lora_train import LoraTrainConfig
    from kuaimod_open.loop.updaters.tag2cot import load_tag2cot_template

    store = Store(db)
    # Validate every file and setting before a model is loaded.
    base_policy = load_policy(store_policy_path(store, policy))
    moderation_template = load_template(template)
    tag2cot = load_tag2cot_template(tag2cot_template)
    train = LoraTrainConfig(
        epochs=epochs,
        dpo_epochs=dpo_epochs,
        max_steps=max_steps,
        learning_rate=lr,
        rank=rank,
        batch_size=batch_size,
        grad_accum=grad_accum,
        max_length=max_length,
        device=device,
        dtype=dtype,
        progress=True,
    )
    golden_rows = []
    if benchmark:
        from kuaimod_open.ingest.benchmark import load_eval_data

        golden_rows = load_eval_data(benchmark, frames_root)[0]
    moderation = ModerationConfig(generate=GenerateConfig(max_new_tokens=max_new_tokens, batch_size=gen_batch_size))

    def teacher() -> Backend:
        # Built only when there is new work: a cron run with nothing new never loads the teacher.
        # The hf teacher is loaded here and freed before training; a served teacher must run on another GPU
        # (or be stopped before this command trains): see the README's LoRA recipe.
        return build_backend(
            teacher_backend, teacher_model, None, teacher_device, dtype, base_url, api_key, gen_batch_size
        )

    result = update_lora(
        store,
        policy=base_policy,
        template=moderation_template,
        base_model=model,
        teacher=teacher,
        out_dir=out,
        train_config=train,
        moderation=moderation,
        benchmark=golden_rows,
        gate_config=gate,
        holdout=holdout,
        tag2cot=tag2cot,
    )
    if result.counts is not None:
        c = result.counts
        click.echo(
            f"data: {c.cases} cases, {c.kept} chains kept, {c.dropped} dropped (wrong label {c.dropped_wrong_label}, "
            f"not well-formed {c.dropped_unparsed}, teacher error {c.dropped_teacher_error}, input error "
            f"{c.dropped_input_error}); {c.pairs} DPO pairs from {c.disagreements} disagreements"
        )
    if result.meta is not None and result.adapter is not None:
        r = result.meta.result
        click.echo(
            f"train: SFT {len(r.sft_losses)} steps ({r.sft_epochs} epochs of {r.sft_examples} chains), "
            f"{_summary(r.sft_losses)}; DPO {len(r.dpo_losses)} steps ({r.dpo_epochs} epochs of {r.dpo_pairs} pairs), "
            f"{_summary(r.dpo_losses)} ({r.device}, {r.seconds:.1f} s)"
        )
        if r.skipped_too_long:
            click.echo(
                f"train: {r.skipped_too_long} examples longer than --max-length {max_length} tokens were skipped "
                f"(longest: {r.longest_tokens})"
            )
        click.echo(f"adapter: {result.adapter.path} [{result.adapter.status}]")
    click.echo(result.message)
    click.echo(f"watermark lora = {result.watermark}")
