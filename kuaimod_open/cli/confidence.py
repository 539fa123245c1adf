"""``kuaimod calibrate-confidence`` and the options that put token confidence on verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import click

from kuaimod_open.cli.options import F, load_policy_and_template
from kuaimod_open.judge.backends.base import GenerateConfig
from kuaimod_open.judge.confidence import ConfidenceCalibration


def confidence_options(func: F) -> F:
    """--logprobs, --confidence-calibration."""
    func = click.option(
        "--confidence-calibration",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        default=None,
        help="Map token confidence to a calibrated probability (from kuaimod calibrate-confidence); implies "
        "--logprobs.",
    )(func)
    func = click.option(
        "--logprobs/--no-logprobs",
        default=False,
        show_default=True,
        help="Ask the backend for token log-probabilities: verdicts get token_confidence (hf scores, openai logprobs).",
    )(func)
    return func


def generate_config(
    max_new_tokens: int, batch_size: int, logprobs: bool, calibration_path: Path | None
) -> tuple[GenerateConfig, ConfidenceCalibration | None]:
    """The generation settings and the loaded calibration (which needs log-probabilities)."""
    from kuaimod_open.judge.confidence import load_confidence_calibration

    calibration = load_confidence_calibration(calibration_path) if calibration_path else None
    generate = GenerateConfig(
        max_new_tokens=max_new_tokens, batch_size=batch_size, logprobs=logprobs or calibration is not None
    )
    return generate, calibration


@click.command("calibrate-confidence")
@click.argument("verdicts", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--data",
    required=True,
    help="The labelled rows the verdicts are about (KuaiMod-format JSONL or hf://...).",
)
@click.option("--policy", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Policy YAML file.")
@click.option("--method", type=click.Choice(["auto", "sigmoid", "isotonic"]), default="auto", show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("confidence_calibration.json"),
    show_default=True,
)
def calibrate_confidence_cmd(verdicts: Path, data: str, policy: Path | None, method: str, out: Path) -> None:
    """Fit how often the VLM's category is right at each token confidence, from a labelled run.

    The verdicts must carry token_confidence (run with --logprobs). The calibration is valid for the
    model, adapter, prompt and policy of that run; they are recorded in the file.

    \b
    Examples:
      kuaimod eval --data golden.jsonl --model Qwen/Qwen2.5-VL-7B-Instruct --logprobs --report runs/golden
      kuaimod calibrate-confidence runs/golden/verdicts.jsonl --data golden.jsonl --out calib.json
      kuaimod moderate clips/ --model Qwen/Qwen2.5-VL-7B-Instruct --confidence-calibration calib.json
    """
    from kuaimod_open.ingest.benchmark import load_eval_data
    from kuaimod_open.ingest.sample import read_jsonl
    from kuaimod_open.judge.confidence import fit_confidence_calibration
    from kuaimod_open.judge.verdict import Verdict

    pol, _ = load_policy_and_template(policy, None)
    samples = load_eval_data(data)[0]
    rows = [Verdict.model_validate(obj) for _, obj in read_jsonl(verdicts)]
    fitted = fit_confidence_calibration(rows, samples, pol, _method(method))
    fitted.save(out)
    auc = "n/a" if fitted.auc is None else f"{fitted.auc:.3f}"
    click.echo(
        f"calibration ({fitted.calibrator.method}) fit on {fitted.n} verdicts ({fitted.skipped} without token "
        f"confidence): accuracy {fitted.accuracy:.3f}, AUC {auc}, ECE {fitted.ece_before:.3f} -> "
        f"{fitted.ece_after:.3f} (in-sample) -> {out}"
    )


def _method(name: str) -> Literal["auto", "sigmoid", "isotonic"]:
    if name == "sigmoid":
        return "sigmoid"
    if name == "isotonic":
        return "isotonic"
    return "auto"
