"""Bounded inputs: policy file size, YAML alias expansion, rendered policy and prompt size.

Regression tests for issue #13 ("Bounded inputs"): on the old code a YAML alias bomb given as the
policy ended in a MemoryError traceback after 106 s and 6.3 GB, and a policy whose description was
45 MB was accepted and sent with every request (17.5 M characters).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from helpers import verdict_json

from kuaimod_open.errors import PolicyError, PromptError
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.backends.scripted import ScriptedBackend
from kuaimod_open.judge.pipeline import ModerationConfig, moderate
from kuaimod_open.judge.policy import load_policy, parse_policy

REPO = Path(__file__).resolve().parent.parent
SHIPPED = (REPO / "prompts" / "policy.yaml").read_text(encoding="utf-8")


def alias_bomb(levels: int = 9, width: int = 10) -> str:
    """The shipped policy plus 'lol' anchors: level n is ``width`` aliases of level n - 1 (width^levels nodes)."""
    lines = [f'lol0: &lol0 ["{"x" * 10}"]']
    for n in range(1, levels + 1):
        lines.append(f"lol{n}: &lol{n} [" + ", ".join([f"*lol{n - 1}"] * width) + "]")
    return SHIPPED + "\n" + "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_fails_fast_with_a_clear_policy_error(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(), encoding="utf-8")
    assert path.stat().st_size < len(SHIPPED.encode()) + 2_000  # a small file...
    # ...run in a child with 1.5 GB of address space and 60 s, so the old behaviour (6 GB) cannot hurt the machine.
    script = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
        from kuaimod_open.judge.policy import load_policy
        from kuaimod_open.errors import PolicyError
        try:
            load_policy({str(path)!r})
        except PolicyError as exc:
            print("PolicyError:", exc)
        """
    )
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO)
    except subprocess.TimeoutExpired:
        pytest.fail("loading an alias bomb ran for 60 s")
    assert time.monotonic() - started < 30
    assert done.stdout.startswith("PolicyError:"), done.stdout + done.stderr[-2000:]
    assert re.search(r"expands to [\d,]{13,} YAML nodes once its aliases", done.stdout)  # ~2 x 10^9
    assert "alias bomb" in done.stdout and "limit is 100,000" in done.stdout
    assert "Traceback" not in done.stderr


def test_aliases_within_the_bound_still_work():
    text = SHIPPED + "\nshared: &s [a, b]\nagain: *s\n"
    with pytest.raises(PolicyError, match="unknown key"):  # the keys are unknown; the aliases are fine
        parse_policy(text)


def test_a_45_mb_description_is_refused_before_it_is_read_whole(tmp_path):
    data = yaml.safe_load(SHIPPED)
    data["description"] = "@DESCRIPTION@"
    description = "很长的说明。" * (45_000_000 // 18)  # 45 MB of UTF-8, 15 M characters
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True).replace("'@DESCRIPTION@'", description), encoding="utf-8")
    assert path.stat().st_size > 40_000_000
    started = time.monotonic()
    with pytest.raises(PolicyError, match=r"the policy is [\d,]+ bytes; the limit is 1,048,576"):
        load_policy(path)
    assert time.monotonic() - started < 5
    with pytest.raises(PolicyError, match="the limit is 1,048,576"):
        parse_policy(path.read_text(encoding="utf-8"), source="<edited policy>")  # the review UI's editor path


def test_a_policy_rendering_past_the_prompt_budget_is_refused(tmp_path):
    data = yaml.safe_load(SHIPPED)
    for category in data["categories"]:
        category["examples"] = [f"example {i} " + "长" * 300 for i in range(40)]  # ~600 KB of YAML
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert path.stat().st_size < 1 << 20
    with pytest.raises(PolicyError, match=r"renders to [\d,]+ characters of prompt text.*limit is 100,000"):
        load_policy(path)


def test_deep_nesting_is_a_policy_error_not_a_recursion_error():
    with pytest.raises(PolicyError, match="nested too deeply|not valid YAML"):
        parse_policy("version: 1\nname: x\nx: " + "[" * 2000 + "]" * 2000 + "\n")


def test_a_fifo_or_folder_as_policy_or_template_is_refused_without_blocking(tmp_path):
    import os
    import threading

    from kuaimod_open.judge.prompt import load_template

    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    errors: list[Exception] = []

    def load() -> None:
        for loader in (load_policy, load_template):
            try:
                loader(fifo)
            except Exception as exc:  # noqa: BLE001 (collected and checked below)
                errors.append(exc)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "reading a FIFO as the policy blocked"
    assert [type(e) for e in errors] == [PolicyError, PromptError]
    assert all("not a regular file" in str(e) for e in errors)
    with pytest.raises(PolicyError, match="not a regular file"):
        load_policy(tmp_path)


def test_an_oversized_prompt_becomes_an_error_verdict_and_is_never_sent(policy, template, tmp_path):
    # A policy built in code (not through the loader) with a huge description: the prompt bound still holds.
    huge = policy.model_copy(update={"description": "说明" * 150_000})
    backend = ScriptedBackend(default=verdict_json("BENIGN"))
    config = ModerationConfig(frames_dir=tmp_path)
    [verdict] = list(moderate([Sample(id="s", title="t")], huge, backend, template, config))
    assert verdict.decision == "review" and verdict.status == "error" and "limit is 200,000" in (verdict.error or "")
    assert backend.history == []  # nothing was sent
    from kuaimod_open.judge.prompt import MAX_TEMPLATE_BYTES, parse_template

    with pytest.raises(PromptError, match="byte limit"):
        parse_template("x" * (MAX_TEMPLATE_BYTES + 1))
