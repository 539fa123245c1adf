"""Versioned artefacts: policy files, routers and LoRA adapters, with one active version each.

Nothing is edited in place. A new policy is a new file (``policy.v<version>.yaml``) registered as a
*candidate*; an evaluation gate (:mod:`kuaimod_open.loop.gate`) or a person promotes it to *active*,
which retires the previous active version; rollback re-activates any earlier version. Routers and
adapters are directories registered the same way in the ``models`` table.
"""

from __future__ import annotations

import difflib
import json
import os
import tempfile
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kuaimod_open.errors import ConfigError
from kuaimod_open.judge.policy import Policy, load_policy, parse_policy
from kuaimod_open.loop.store import Store

# Names starting with this in an artefact folder are work in progress of a run (written, then renamed
# into place); one left behind belongs to a run that died, and the next update run removes it.
TMP_PREFIX = ".tmp-"


class Status(StrEnum):
    """Lifecycle of a registered artefact."""

    CANDIDATE = "candidate"
    ACTIVE = "active"
    RETIRED = "retired"
    REJECTED = "rejected"


class Artefact(BaseModel):
    """A registered policy version, router or adapter."""

    id: int
    kind: str  # "policy", "router", "adapter"
    name: str  # policy version, or a model name
    path: str
    status: Status
    meta: dict[str, Any]
    created_at: datetime


# --------------------------------------------------------------------------- policies


def policy_file_name(policy: Policy) -> str:
    """File name of a saved policy version."""
    safe = "".join(ch if ch.isalnum() or ch in ".-_" else "_" for ch in policy.version)
    return f"policy.v{safe}.yaml"


def save_policy_version(
    store: Store,
    text: str,
    versions_dir: str | Path,
    *,
    note: str = "",
    author: str = "",
    parent: str | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> Artefact:
    """Validate policy YAML text and save it as a new candidate version (a new file; never overwrites).

    The file is written to a private temporary name and renamed into place, so a run killed while
    saving leaves no half-written version (only a temporary file, cleaned by the next update run).

    Raises:
        PolicyError: the text is not a valid policy (message with line and field).
        ConfigError: this version string is already registered (the digest covers the version, so
            identical content is caught here too).
    """
    policy = parse_policy(text, source="<edited policy>")
    for existing in history(store, "policy"):
        if existing.name == policy.version:
            raise ConfigError(f"policy version {policy.version} already exists; bump 'version' before saving")
    folder = Path(versions_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / policy_file_name(policy)
    if path.exists():
        raise ConfigError(f"{path} already exists; bump 'version' before saving")
    write_atomically(path, text)
    meta = {"digest": policy.digest, "note": note, "author": author, "parent": parent, **(extra_meta or {})}
    return register(store, "policy", policy.version, path, meta=meta)


def write_atomically(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def register_policy_file(
    store: Store, path: str | Path, *, status: Status = Status.CANDIDATE, note: str = ""
) -> Artefact:
    """Register an existing policy file (e.g. the shipped one) unless its content is already known."""
    policy = load_policy(path)
    for existing in history(store, "policy"):
        if existing.meta.get("digest") == policy.digest:
            return existing
    art = register(store, "policy", policy.version, path, meta={"digest": policy.digest, "note": note})
    if status is Status.ACTIVE:
        return activate(store, art.id)
    return art


def active_policy(store: Store, default: str | Path | None = None) -> tuple[Policy, Path]:
    """The active policy; with none active yet, ``default`` is registered and activated."""
    art = active(store, "policy")
    if art is None:
        if default is None:
            raise ConfigError("no active policy in the store; register one with `kuaimod policy register FILE`")
        art = register_policy_file(store, default, status=Status.ACTIVE, note="initial policy")
    return load_policy(art.path), Path(art.path)


def policy_diff_text(old_path: str | Path, new_path: str | Path) -> str:
    """A unified diff of two policy files."""
    old = Path(old_path).read_text(encoding="utf-8").splitlines(keepends=True)
    new = Path(new_path).read_text(encoding="utf-8").splitlines(keepends=True)
    return "".join(difflib.unified_diff(old, new, fromfile=str(old_path), tofile=str(new_path)))


# --------------------------------------------------------------------------- generic registry


def register(store: Store, kind: str, name: str, path: str | Path, *, meta: dict[str, Any] | None = None) -> Artefact:
    """Register an artefact as a candidate."""
    t = store.table("models")
    with store.begin() as conn:
        row = conn.execute(
            t.insert().values(
                kind=kind,
                name=name,
                path=str(path),
                status=str(Status.CANDIDATE),
                meta=json.dumps(meta or {}, ensure_ascii=False),
                created_at=datetime.now(UTC),
            )
        )
        new_id = int(row.inserted_primary_key[0])
    return get(store, new_id)


def get(store: Store, artefact_id: int) -> Artefact:
    """One artefact by id."""
    t = store.table("models")
    with store.engine.connect() as conn:
        row = conn.execute(store.sa.select(t).where(t.c.id == artefact_id)).mappings().first()
    if row is None:
        raise ConfigError(f"no registered artefact with id {artefact_id}")
    return _artefact(dict(row))


def history(store: Store, kind: str) -> list[Artefact]:
    """Every artefact of a kind, oldest first."""
    t = store.table("models")
    with store.engine.connect() as conn:
        rows = conn.execute(store.sa.select(t).where(t.c.kind == kind).order_by(t.c.id)).mappings().all()
    return [_artefact(dict(r)) for r in rows]


def active(store: Store, kind: str) -> Artefact | None:
    """The active artefact of a kind, if any."""
    return next((a for a in reversed(history(store, kind)) if a.status is Status.ACTIVE), None)


def set_status(store: Store, artefact_id: int, status: Status) -> Artefact:
    """Change an artefact's status (use :func:`activate` to make one active)."""
    t = store.table("models")
    with store.begin() as conn:
        conn.execute(t.update().where(t.c.id == artefact_id).values(status=str(status)))
    return get(store, artefact_id)


def activate(store: Store, artefact_id: int) -> Artefact:
    """Make an artefact the active one of its kind; the previous active one is retired."""
    art = get(store, artefact_id)
    t = store.table("models")
    with store.begin() as conn:
        conn.execute(
            t.update().where(t.c.kind == art.kind, t.c.status == str(Status.ACTIVE)).values(status=str(Status.RETIRED))
        )
        conn.execute(t.update().where(t.c.id == artefact_id).values(status=str(Status.ACTIVE)))
    return get(store, artefact_id)


def rollback(store: Store, kind: str, to: str | None = None) -> Artefact:
    """Re-activate the version named ``to`` (or, by default, the one active before the current one)."""
    items = history(store, kind)
    if to is not None:
        matches = [a for a in items if a.name == to or str(a.id) == to]
        if not matches:
            raise ConfigError(f"no {kind} named {to!r}; known: {', '.join(a.name for a in items) or 'none'}")
        return activate(store, matches[-1].id)
    current = active(store, kind)
    previous = [a for a in items if a.status is Status.RETIRED and (current is None or a.id < current.id)]
    if not previous:
        raise ConfigError(f"no earlier {kind} to roll back to")
    return activate(store, previous[-1].id)


def update_meta(store: Store, artefact_id: int, **fields: Any) -> Artefact:
    """Merge ``fields`` into an artefact's meta (e.g. how its gate ended)."""
    art = get(store, artefact_id)
    t = store.table("models")
    with store.begin() as conn:
        conn.execute(
            t.update().where(t.c.id == artefact_id).values(meta=json.dumps({**art.meta, **fields}, ensure_ascii=False))
        )
    return get(store, artefact_id)


def _artefact(row: dict[str, Any]) -> Artefact:
    row["meta"] = json.loads(row.get("meta") or "{}")
    return Artefact.model_validate(row)
