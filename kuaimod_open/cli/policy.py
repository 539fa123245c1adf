"""``kuaimod policy``: validate, render and diff policy files."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from kuaimod_open.cli.evaluate import data_options, router_option
from kuaimod_open.cli.options import backend_options, build_backend, frame_options, load_policy_and_template
from kuaimod_open.core.progress import track
from kuaimod_open.errors import ConfigError, PolicyError
from kuaimod_open.evaluation.policy_diff import Predictor, diff_policies, render_diff
from kuaimod_open.ingest.benchmark import load_eval_data, sample_from_row
from kuaimod_open.ingest.sample import Sample, read_jsonl
from kuaimod_open.judge.backends.base import GenerateConfig
from kuaimod_open.judge.pipeline import ModerationConfig, moderate
from kuaimod_open.judge.policy import Policy, load_policy
from kuaimod_open.judge.prompt import Message, Template, build_messages
from kuaimod_open.judge.verdict import Verdict

# What `policy render` shows without --sample: every field filled, so every placeholder is visible.
EXAMPLE = Sample(id="example", title="示例标题 example title", ocr="屏幕文字 on-screen text", asr="语音 speech")


@click.group("policy")
def policy_group() -> None:
    """Policy-file tools: validate (CI, pre-commit), render the prompt, diff two versions on data."""


@policy_group.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--quiet", "-q", is_flag=True, help="Print only the problems.")
def validate_cmd(files: tuple[Path, ...], quiet: bool) -> None:
    """Check policy files against the schema; exit 1 with every problem as FILE:LINE: field: message.

    Nothing is loaded but the files, so it suits CI and a pre-commit hook (see .pre-commit-hooks.yaml).

    \b
    Examples:
      kuaimod policy validate prompts/policy.yaml my_policy.yaml
      pre-commit run kuaimod-policy-validate --all-files
    """
    failed = 0
    for path in files:
        try:
            policy = load_policy(path)
        except PolicyError as exc:
            failed += 1
            click.echo(str(exc), err=True)
            continue
        if not quiet:
            click.echo(
                f"{path}: ok (version {policy.version}, {len(policy.categories)} categories, digest {policy.digest})"
            )
    if failed:
        click.echo(f"{failed} of {len(files)} policy file(s) invalid", err=True)
        sys.exit(1)


@policy_group.command("render")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--sample",
    "row",
    default=None,
    help="The sample to render: a KuaiMod-format JSON object, or ROWS.jsonl[:LINE] (default: the first row) "
    "[default: an example with every text field filled].",
)
@click.option("--frames-root", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--template", type=click.Path(dir_okay=False, path_type=Path), default=None)
def render_cmd(file: Path, row: str | None, frames_root: Path | None, template: Path | None) -> None:
    """Print the exact prompt (system and user messages) that the policy FILE produces for one sample.

    \b
    Examples:
      kuaimod policy render prompts/policy.yaml
      kuaimod policy render my_policy.yaml --sample bench.jsonl:12 --frames-root images/
      kuaimod policy render my_policy.yaml --sample '{"pid": "1", "title": "加我V 私聊", "OCR": "", "ASR": ""}'
    """
    policy, tmpl = load_policy_and_template(file, template)
    sample = _sample(row, frames_root) if row else EXAMPLE
    click.echo(render_messages(build_messages(sample, policy, tmpl)))


def render_messages(messages: Sequence[Message]) -> str:
    """Messages as text, each image shown by its path."""
    blocks = []
    for message in messages:
        body = "".join(p if isinstance(p, str) else f"<image {p.path}>" for p in message.parts)
        blocks.append(f"===== {message.role} =====\n{body}")
    return "\n\n".join(blocks)


def _sample(row: str, frames_root: Path | None) -> Sample:
    """The sample named by --sample: a JSON object, or a line of a JSONL file."""
    if row.lstrip().startswith("{"):
        try:
            obj = json.loads(row)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--sample: not a JSON object ({exc.msg})") from None
        return sample_from_row(obj, frames_root)
    path, _, line = row.rpartition(":") if row.rpartition(":")[2].isdigit() else (row, "", "")
    for number, obj in read_jsonl(path):
        if not line or number == int(line):
            return sample_from_row(obj, frames_root, line=number)
    raise ConfigError(f"--sample: {path} has no row at line {line}" if line else f"--sample: {path} has no rows")


@policy_group.command("diff")
@click.argument("old", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(dir_okay=False, path_type=Path))
@data_options
@router_option
@click.option("--template", type=click.Path(dir_okay=False, path_type=Path), default=None)
@backend_options
@frame_options
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the diff as JSON."
)
def diff_cmd(
    old: Path,
    new: Path,
    data: str | None,
    frames_root: Path | None,
    limit: int | None,
    split: str,
    router: Path | None,
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
    out: Path | None,
) -> None:
    """Replay OLD and NEW policies on the same samples; list flipped samples and metric deltas."""
    old_policy, new_policy = load_policy(old), load_policy(new)
    if data is None:
        raise click.UsageError("pass --data with the samples to replay")
    samples, _ = load_eval_data(data, frames_root, split=split)
    samples = samples[:limit] if limit else samples
    if router is not None:
        predict = _router_predictor(router)
    else:
        _, tmpl = load_policy_and_template(old, template)
        config = ModerationConfig(
            frames=frames_k,
            max_side=max_side,
            frames_dir=Path(".kuaimod/frames"),
            generate=GenerateConfig(max_new_tokens=max_new_tokens, batch_size=batch_size),
        )
        model_backend = build_backend(backend, model, adapter, device, dtype, base_url, api_key, batch_size)
        predict = _vlm_predictor(model_backend, tmpl, config)
    diff = diff_policies(samples, old_policy, new_policy, predict)
    click.echo(render_diff(diff))
    if out is not None:
        out.write_text(diff.model_dump_json(indent=2), encoding="utf-8")


def _router_predictor(path: Path) -> Predictor:
    from kuaimod_open.first_stage.router import load_router

    router = load_router(path)
    return lambda samples, policy: router.verdicts(samples, policy)


def _vlm_predictor(backend: Any, template: Template, config: ModerationConfig) -> Predictor:
    def predict(samples: Sequence[Sample], policy: Policy) -> list[Verdict]:
        verdicts = moderate(samples, policy, backend, template, config)
        return list(track(verdicts, total=len(samples), desc=f"policy {policy.version}", unit="video"))

    return predict


__all__ = ["policy_group", "render_messages"]
