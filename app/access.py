"""Who may do what in the review app: accounts with roles, password hashes, login rate limiting, sessions.

Credentials come from ``--users-file`` / ``KUAIMOD_REVIEW_USERS_FILE`` (one ``name:secret[:role]`` a
line, the file private to its owner: ``chmod 600``) or ``KUAIMOD_REVIEW_USERS`` (the same, comma
separated). ``secret`` is a hash from ``kuaimod review --hash-password`` (``scrypt$...``) or, discouraged,
a plain password. ``role`` is ``reviewer`` (the default) or ``admin``: only admins activate a policy
version or roll one back.

On loopback without credentials there is one person at the keyboard: the operator (``--reviewer``
or the login name of the account running the app), with the admin role. The name is fixed, not typed.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import secrets
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from kuaimod_open.errors import ConfigError, KuaimodError
from kuaimod_open.serving.access import check_secret_file, is_loopback

USERS_ENV = "KUAIMOD_REVIEW_USERS"
USERS_FILE_ENV = "KUAIMOD_REVIEW_USERS_FILE"
HASH_PREFIX = "scrypt$"
# scrypt work factor: about 30 ms and 16 MiB per check on this machine; slow enough to make a stolen
# users file expensive to crack, fast enough for a login.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


class Role(StrEnum):
    """What an account may do."""

    REVIEWER = "reviewer"  # decide items, reveal media, edit and save policy candidates, dry-run
    ADMIN = "admin"  # all of that, and activate or roll back the policy


class AccessError(KuaimodError):
    """An action the current session may not take; the message says why."""


@dataclass(frozen=True)
class Account:
    """One reviewer account: the stored secret (a hash, or a plain password) and the role."""

    name: str
    secret: str
    role: Role = Role.REVIEWER

    @property
    def hashed(self) -> bool:
        """Whether the secret is a password hash (not the password itself)."""
        return self.secret.startswith(HASH_PREFIX)


@dataclass(frozen=True)
class Session:
    """Who is acting: the signed-in account, or the local operator on loopback."""

    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        """Whether this session may activate and roll back policies."""
        return self.role is Role.ADMIN

    def require_admin(self, what: str) -> None:
        """Refuse ``what`` unless the session is an admin's."""
        if not self.is_admin:
            raise AccessError(f"only a policy admin may {what}; {self.name} is signed in as {self.role}")


# --------------------------------------------------------------------------- passwords


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A salted scrypt hash of ``password`` for the users file (``scrypt$N$r$p$salt$hash``)."""
    if not password:
        raise ConfigError("an empty password cannot be hashed: choose a password")
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"{HASH_PREFIX}{_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, secret: str) -> bool:
    """Whether ``password`` matches ``secret`` (a hash from :func:`hash_password`, or a plain password)."""
    if not secret.startswith(HASH_PREFIX):
        return hmac.compare_digest(password.encode("utf-8"), secret.encode("utf-8"))
    try:
        n, r, p, salt, digest = secret.removeprefix(HASH_PREFIX).split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False  # a malformed hash never matches
    return hmac.compare_digest(actual, expected)


# --------------------------------------------------------------------------- accounts


def parse_users(text: str, source: str) -> dict[str, Account]:
    """``name:secret[:role]`` entries (commas or new lines) as accounts by name.

    The role is the last field when it reads ``admin`` or ``reviewer``; a plain password may itself
    contain ``:``.
    """
    users: dict[str, Account] = {}
    for raw in text.replace("\n", ",").split(","):
        item = raw.strip()
        if not item or item.startswith("#"):
            continue
        name, sep, rest = item.partition(":")
        role = Role.REVIEWER
        head, colon, last = rest.rpartition(":")
        if colon and last.strip() in (Role.ADMIN.value, Role.REVIEWER.value):
            rest, role = head, Role(last.strip())
        if not sep or not name.strip() or not rest:
            raise ConfigError(
                f"{source}: each credential must look like name:password or name:password:admin "
                f"(got {name.strip()!r}...)"
            )
        users[name.strip()] = Account(name=name.strip(), secret=rest, role=role)
    return users


def check_private_file(path: Path) -> None:
    """Refuse a credentials file that others on the machine can read or write (it must be ``chmod 600``)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read credentials file {path}: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path} can be read or written by other accounts (mode {stat.filemode(mode)}): "
            f"run `chmod 600 {path}` so that only its owner can read the credentials"
        )


def load_users(users_file: Path | None = None) -> dict[str, Account]:
    """Accounts from ``--users-file``, ``KUAIMOD_REVIEW_USERS_FILE`` or ``KUAIMOD_REVIEW_USERS``.

    Raises:
        ConfigError: the file is inside a git working tree, readable by others, or malformed.
    """
    path = users_file or (Path(os.environ[USERS_FILE_ENV]) if os.environ.get(USERS_FILE_ENV) else None)
    if path is not None:
        check_secret_file(path)
        check_private_file(path)
        try:
            return parse_users(path.read_text(encoding="utf-8"), str(path))
        except OSError as exc:
            raise ConfigError(f"cannot read credentials file {path}: {exc.strerror or exc}") from None
    return parse_users(os.environ.get(USERS_ENV, ""), USERS_ENV)


def check_access(host: str, users: dict[str, Account]) -> None:
    """Refuse to expose the app beyond this machine without credentials."""
    if not is_loopback(host) and not users:
        raise ConfigError(
            f"refusing to bind to {host} without credentials: reviewers' decisions are written with their names. "
            f"Set {USERS_ENV}='alice:HASH,bob:HASH:admin' or pass --users-file FILE (one name:HASH[:admin] a line, "
            "chmod 600, kept outside the repository; HASH from `kuaimod review --hash-password`), "
            "or bind to 127.0.0.1."
        )


def local_operator(default: str = "") -> str:
    """The fixed reviewer name on loopback without credentials: ``--reviewer``, else the OS login name."""
    if default.strip():
        return default.strip()[:200]
    try:
        return getpass.getuser()[:200]
    except (KeyError, OSError):  # no passwd entry (some containers)
        return f"uid-{os.getuid()}"


# --------------------------------------------------------------------------- login rate limiting


class LoginLimiter:
    """Slows password guessing: a name is locked after repeated failures, and so is everyone during a spray.

    ``per_name`` failures for one name within ``window_s`` lock that name until the oldest of them
    leaves the window; ``overall`` failures across all names within ``window_s`` lock every login the
    same way (guessing many names). While locked even the right password is refused, so a guesser
    learns nothing.
    """

    def __init__(
        self, *, per_name: int = 5, overall: int = 30, window_s: float = 300.0, clock: Callable[[], float] | None = None
    ) -> None:
        self.per_name, self.overall, self.window_s = per_name, overall, window_s
        self._clock = clock or time.monotonic
        self._failures: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()
        self._lock = threading.Lock()

    def _prune(self, stamps: deque[float], now: float) -> None:
        while stamps and now - stamps[0] >= self.window_s:
            stamps.popleft()

    def locked(self, name: str) -> bool:
        """Whether a login as ``name`` is refused right now."""
        now = self._clock()
        with self._lock:
            own = self._failures.get(name, deque())
            self._prune(own, now)
            self._prune(self._all, now)
            return len(own) >= self.per_name or len(self._all) >= self.overall

    def failed(self, name: str) -> None:
        """Record a failed login for ``name``."""
        now = self._clock()
        with self._lock:
            self._failures.setdefault(name, deque()).append(now)
            self._all.append(now)

    def succeeded(self, name: str) -> None:
        """A successful login clears that name's failures."""
        with self._lock:
            self._failures.pop(name, None)


def authenticator(
    users: dict[str, Account], limiter: LoginLimiter, on_refused: Callable[[str, str], None] | None = None
) -> Callable[[str, str], bool]:
    """The login check handed to Gradio: rate limited, constant work for unknown names.

    ``on_refused(name, why)`` is called for every refused login (the app writes it to the audit trail).
    """
    dummy = hash_password(secrets.token_urlsafe(12))  # unknown names cost the same as known ones

    def check(username: str, password: str) -> bool:
        name = username.strip()
        if limiter.locked(name):
            if on_refused is not None:
                on_refused(name, "rate limited")
            return False
        account = users.get(name)
        ok = verify_password(password, account.secret if account is not None else dummy) and account is not None
        if ok:
            limiter.succeeded(name)
            return True
        limiter.failed(name)
        if on_refused is not None:
            on_refused(name, "wrong name or password")
        return False

    return check


def session_for(username: str | None, users: dict[str, Account], operator: str) -> Session:
    """The session behind a request: the signed-in account, or the local operator when there are no accounts.

    Raises:
        AccessError: accounts are configured and the request carries no signed-in, known account.
    """
    if not users:
        return Session(name=operator, role=Role.ADMIN)
    account = users.get(username or "")
    if account is None:
        raise AccessError("this session is not signed in (or the account was removed): reload the page and sign in")
    return Session(name=account.name, role=account.role)
