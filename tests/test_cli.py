from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kuaimod_open.cli import cli

REPO = Path(__file__).resolve().parent.parent


def run_cli(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m kuaimod_open`` in a fresh interpreter, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "kuaimod_open", *args], capture_output=True, text=True, cwd=cwd or REPO, timeout=300
    )


def test_import_loads_no_heavy_library():
    code = (
        "import sys, kuaimod_open, kuaimod_open.cli, kuaimod_open.judge.pipeline, kuaimod_open.judge.backends; "
        "heavy = [m for m in ('torch', 'transformers', 'decord', 'gradio', 'openai', 'sklearn') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_help_lists_the_commands():
    result = run_cli(["--help"])
    assert result.returncode == 0
    assert "moderate" in result.stdout and "tiny-model" in result.stdout


@pytest.mark.hf
@pytest.mark.video
def test_moderate_a_real_video_with_the_tiny_model(tiny_model, videos, tmp_path):
    pytest.importorskip("decord")
    out = tmp_path / "verdicts.jsonl"
    args = [
        "moderate",
        str(videos[0].parent),
        "--model",
        str(tiny_model),
        "--device",
        "cpu",
        "--frames",
        "4",
        "--max-new-tokens",
        "16",
        "--out",
        str(out),
        "--no-progress",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(x["sample_id"] for x in lines) == ["bikes", "carphone_pristine"]
    assert all(x["decision"] == "review" for x in lines)
    assert all(x["status"] == "unparsed" or "truncated_answer" in x["flags"] for x in lines)
    assert all(len(x["provenance"]["frame_timestamps"]) == 5 for x in lines)
    assert "2 verdicts written" in result.output and "review=2" in result.output
    # frames were kept next to the output for reviewers
    assert len(list((tmp_path / "verdicts.jsonl.frames").rglob("*.jpg"))) == 10
    # a second run resumes: nothing new to do
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "0 verdicts written" in again.output and "2 already done" in again.output


def test_bad_policy_fails_before_any_model_loads(tmp_path):
    bad = tmp_path / "policy.yaml"
    bad.write_text(
        (REPO / "prompts" / "policy.yaml").read_text(encoding="utf-8").replace("action: block", "action: nuke", 1),
        encoding="utf-8",
    )
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    result = run_cli(["moderate", str(video), "--policy", str(bad), "--model", "/definitely/not/loaded"])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{bad}:" in result.stderr and "action" in result.stderr and "nuke" in result.stderr


def test_missing_input_is_a_one_line_error(tmp_path):
    result = run_cli(["moderate", str(tmp_path / "nope.mp4")])
    assert result.returncode == 2 and "Input not found" in result.stderr and "Traceback" not in result.stderr


def test_openai_backend_needs_a_model_name(tmp_path):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    result = run_cli(["moderate", str(video), "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"])
    assert result.returncode == 2 and "--model" in result.stderr


@pytest.mark.hf
def test_tiny_model_command_builds_a_loadable_checkpoint(tmp_path):
    pytest.importorskip("torch")
    result = CliRunner().invoke(cli, ["tiny-model", str(tmp_path / "tiny")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tiny" / "config.json").is_file()
    from kuaimod_open.judge.backends.hf import HFBackend

    assert HFBackend(str(tmp_path / "tiny"), device="cpu").patch_size == 14
    qwen3 = CliRunner().invoke(cli, ["tiny-model", str(tmp_path / "q3"), "--arch", "qwen3_vl"])
    assert qwen3.exit_code == 0 and "qwen3_vl" in qwen3.output, qwen3.output
    assert json.loads((tmp_path / "q3" / "config.json").read_text())["model_type"] == "qwen3_vl"


def test_help_examples_are_printed_unwrapped():
    # click keeps a paragraph as written only after a real backspace (\b, 0x08) line; in a raw
    # docstring it is a literal backslash-b and the examples were reflowed into one line.
    import click

    def commands(group, prefix):
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                yield from commands(command, [*prefix, name])
            else:
                yield [*prefix, name], command

    checked = 0
    for path, command in commands(cli, []):
        doc = command.help or ""
        if "Examples:" not in doc:
            continue
        output = CliRunner().invoke(cli, [*path, "--help"], terminal_width=200).output
        assert "\\b" not in output, path
        for line in doc.split("Examples:", 1)[1].splitlines():
            if line.strip():
                assert "\n    " + line.strip() in output, (path, line)
        checked += 1
    assert checked >= 8
