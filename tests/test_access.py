"""Access control: exposed services need credentials, and credentials never live inside a repository."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kuaimod_open.cli import cli
from kuaimod_open.errors import ConfigError
from kuaimod_open.serving.access import check_secret_file, is_loopback, repository_of

REPO = Path(__file__).resolve().parent.parent


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5") and not is_loopback("review.example")


def test_secret_files_inside_a_git_tree_are_refused(tmp_path):
    (tmp_path / "project" / ".git").mkdir(parents=True)
    inside = tmp_path / "project" / "conf" / "keys.txt"
    inside.parent.mkdir()
    inside.write_text("k1\n")
    assert repository_of(inside) == tmp_path / "project"
    with pytest.raises(ConfigError, match="inside the git working tree"):
        check_secret_file(inside)
    outside = tmp_path / "keys.txt"
    outside.write_text("k1\n")
    check_secret_file(outside)


def test_serve_refuses_keys_from_the_repository_and_open_access_on_public_addresses(tmp_path):
    pytest.importorskip("fastapi")
    runner = CliRunner()
    result = runner.invoke(cli, ["serve", "--host", "0.0.0.0", "--no-auth", "--model", "/not/loaded"])
    assert result.exit_code != 0 and "--no-auth is only allowed on a loopback address" in str(result.exception)
    result = runner.invoke(cli, ["serve", "--key-file", str(REPO / "README.md"), "--model", "/not/loaded"])
    assert result.exit_code != 0 and "inside the git working tree" in str(result.exception)


def test_review_ui_refuses_a_users_file_from_the_repository(monkeypatch):
    cfg = pytest.importorskip("kuaimod_open.app.access")  # the review app's accounts
    monkeypatch.setenv("KUAIMOD_REVIEW_USERS_FILE", str(REPO / "README.md"))
    with pytest.raises(ConfigError, match="inside the git working tree"):
        cfg.load_users()
