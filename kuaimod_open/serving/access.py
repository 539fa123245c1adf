"""Access rules shared by the HTTP service and the review UI.

Exposing a service beyond this machine requires credentials, and credentials are read from the
environment or from a file kept outside any git working tree (a secret committed by accident is a
secret leaked).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from kuaimod_open.errors import ConfigError


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name may resolve anywhere: treat it as exposed


def repository_of(path: Path) -> Path | None:
    """The git working tree that contains ``path``, if any."""
    for folder in [path.resolve(), *path.resolve().parents]:
        if (folder / ".git").exists():
            return folder
    return None


def check_secret_file(path: Path) -> None:
    """Refuse a credentials file that lies inside a git working tree."""
    repo = repository_of(path)
    if repo is not None:
        raise ConfigError(
            f"{path} is inside the git working tree {repo}: keep credentials outside any repository "
            "(e.g. /etc/kuaimod/ or ~/.config/kuaimod/), or pass them through the environment"
        )
