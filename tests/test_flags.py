"""Verdict flags are one enum with the reviewer's text beside each, and no stage spells them by hand."""

from __future__ import annotations

import ast
from pathlib import Path

import kuaimod_open
from kuaimod_open.judge.flags import REVIEW_TEXT, SHORT_TEXT, Flag, detail, main_reason, parse

PKG = Path(kuaimod_open.__file__).resolve().parent


def test_every_flag_has_its_review_text():
    assert set(REVIEW_TEXT) == set(Flag) and set(SHORT_TEXT) == set(Flag)
    assert all(text.strip() for text in [*REVIEW_TEXT.values(), *SHORT_TEXT.values()])


def test_main_reason_is_the_most_important_known_flag():
    assert main_reason(["escalated", "injection:override@title", "injection_suspected"]) is Flag.INJECTION_SUSPECTED
    assert main_reason(["flexible_parse", "unconfirmed_mention"]) is Flag.UNCONFIRMED_MENTION
    assert main_reason(["something_a_newer_version_wrote"]) is None
    assert parse(detail("injection", "override@title")) is None


def test_no_module_spells_a_flag_as_a_bare_string():
    # "error" and "unparsed" are also parse statuses and JSON keys: only the distinctive names are checked.
    names = {f.value for f in Flag} - {"error", "unparsed"}
    offenders = []
    for path in PKG.rglob("*.py"):
        if path.name == "flags.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                offenders.append(f"{path.relative_to(PKG)}:{node.lineno} {node.value!r}")
    assert not offenders, "use kuaimod_open.judge.flags.Flag instead of:\n" + "\n".join(offenders)
