"""`kuaimod policy validate` (CI, pre-commit) and `kuaimod policy render`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from click.testing import CliRunner

from kuaimod_open.cli import cli

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "prompts" / "policy.yaml"


def _broken(tmp_path: Path) -> Path:
    text = SHIPPED.read_text(encoding="utf-8").replace("action: block", "action: ban", 1)
    path = tmp_path / "my_policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_validate_passes_good_files_and_fails_with_line_numbered_errors(tmp_path):
    good = CliRunner().invoke(cli, ["policy", "validate", str(SHIPPED)])
    version = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))["version"]
    assert good.exit_code == 0 and f"{SHIPPED}: ok (version {version}," in good.output
    bad = _broken(tmp_path)
    line = next(n for n, text in enumerate(bad.read_text(encoding="utf-8").splitlines(), 1) if "action: ban" in text)
    result = CliRunner().invoke(cli, ["policy", "validate", str(SHIPPED), str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:{line}: categories." in result.output and "'ban'" in result.output
    assert "1 of 2 policy file(s) invalid" in result.output
    (tmp_path / "syntax.yaml").write_text("version: 1\ncategories: [\n", encoding="utf-8")
    syntax = CliRunner().invoke(cli, ["policy", "validate", "-q", str(tmp_path / "syntax.yaml")])
    assert syntax.exit_code == 1 and f"{tmp_path / 'syntax.yaml'}:3: not valid YAML" in syntax.output
    missing = CliRunner().invoke(cli, ["policy", "validate", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and "not found" in missing.output


def test_the_pre_commit_hook_runs_the_validator_on_matching_files(tmp_path):
    (hook,) = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    assert hook["id"] == "kuaimod-policy-validate" and hook["language"] == "python"
    import re

    pattern = re.compile(hook["files"])
    assert pattern.search("prompts/policy.yaml") and pattern.search("team/policy.v1.0.3.yaml")
    assert not pattern.search("prompts/moderation.md") and not pattern.search(".github/workflows/ci.yaml")
    # pre-commit runs `entry` with the staged file names appended: do exactly that.
    command = [sys.executable, "-m", "kuaimod_open", *hook["entry"].split()[1:], str(SHIPPED), str(_broken(tmp_path))]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 1 and "'ban'" in result.stderr and ": ok" not in result.stdout  # --quiet


def test_render_shows_the_exact_prompt_for_an_example_a_json_row_and_a_file_row(tmp_path):
    from PIL import Image

    plain = CliRunner().invoke(cli, ["policy", "render", str(SHIPPED)])
    assert plain.exit_code == 0 and plain.output.startswith("===== system =====")
    assert "===== user =====" in plain.output and "示例标题 example title" in plain.output
    assert "PRIVATE_DEAL" in plain.output  # the policy's categories are in the prompt
    row = {"pid": "r9", "title": "加我V 私聊有货", "OCR": "扫码", "ASR": "", "images": ["r9_0.jpg"]}
    inline = CliRunner().invoke(cli, ["policy", "render", str(SHIPPED), "--sample", json.dumps(row)])
    assert inline.exit_code == 0 and "加我V 私聊有货" in inline.output and "no frames available" in inline.output
    (tmp_path / "images").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "images" / "r9_0.jpg")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"pid": "r1", "title": "first"}) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    args = ["policy", "render", str(SHIPPED), "--sample", f"{rows}:2", "--frames-root", str(tmp_path / "images")]
    from_file = CliRunner().invoke(cli, args)
    assert from_file.exit_code == 0 and f"<image {tmp_path / 'images' / 'r9_0.jpg'}>" in from_file.output
    first = CliRunner().invoke(cli, ["policy", "render", str(SHIPPED), "--sample", str(rows)])
    assert "first" in first.output and "私聊有货" not in first.output
    gone = CliRunner().invoke(cli, ["policy", "render", str(SHIPPED), "--sample", f"{rows}:7"])
    assert gone.exit_code != 0 and "no row at line 7" in str(gone.exception)
    invalid = CliRunner().invoke(cli, ["policy", "render", str(_broken(tmp_path))])
    assert invalid.exit_code != 0 and "'ban'" in str(invalid.exception)  # an invalid policy renders nothing
