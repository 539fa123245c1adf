"""The docs' `kuaimod ...` commands name commands and options that exist (docs that match the code)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from kuaimod_open.cli import cli

REPO = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "eval/README.md", "app/README.md", "prompts/README.md", "BENCHMARKS.md", "RELIABILITY.md"]


def shell_blocks(text: str) -> list[str]:
    """The bodies of fenced blocks marked bash/sh/console (or unmarked)."""
    blocks: list[str] = []
    body: list[str] | None = None
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if body is None:
                lang = line.strip()[3:].strip()
                body = [] if lang in ("", "bash", "sh", "console", "shell") else ["<skip>"]
            else:
                if body[:1] != ["<skip>"]:
                    blocks.append("\n".join(body) + "\n")
                body = None
        elif body is not None:
            body.append(line)
    return blocks


def doc_commands() -> list[tuple[str, list[str]]]:
    """Every `kuaimod` invocation inside a fenced shell block, continuation lines joined."""
    found = []
    for name in DOCS:
        path = REPO / name
        if not path.exists():
            continue
        for block in shell_blocks(path.read_text(encoding="utf-8")):
            for line in block.replace("\\\n", " ").splitlines():
                try:
                    tokens = shlex.split(line, comments=True)
                except ValueError:
                    continue  # not a shell line (e.g. a heredoc body)
                command: list[str] = []
                for token in [*tokens, "&&"]:
                    if token not in ("&&", "|", ";", "||", "&"):
                        command.append(token)
                        continue
                    while command and ("=" in command[0] or command[0] in ("time", "nohup")):
                        command = command[1:]  # environment assignments in front of the command
                    if command and Path(command[0]).name == "kuaimod":
                        found.append((f"{name}: {shlex.join(command)}", command[1:]))
                    command = []
    return found


def resolve(args: list[str]) -> tuple[click.Command, list[str]]:
    command: click.Command = cli
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        assert args[0] in command.commands, f"no command {args[0]!r}"
        command, args = command.commands[args[0]], args[1:]
    return command, args


COMMANDS = doc_commands()


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 30


@pytest.mark.parametrize(("where", "args"), COMMANDS, ids=[w[:80] for w, _ in COMMANDS])
def test_documented_command_and_options_exist(where, args):
    command, rest = resolve(args)
    known = {"--help", "-h"}
    for param in command.params:
        known.update(param.opts)
        known.update(param.secondary_opts)
    unknown = [w.split("=")[0] for w in rest if w.startswith("-") and w.split("=")[0] not in known]
    unknown = [w for w in unknown if not re.fullmatch(r"-\d+(\.\d+)?", w)]  # negative numbers are values
    assert not unknown, f"{where}: unknown option(s) {unknown}"
