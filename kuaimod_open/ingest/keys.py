"""Sample identity: canonical ids, and the collision-free keys every derived artifact is named by.

Canonical ids
-------------
A sample id is what the user sees, resumes by and gives feedback on. It is compared as an exact
string: ``clip/1``, ``clip_1`` and ``clip 1`` are three different samples.

* A manifest row: its ``id`` column (or ``pid``/``sample_id``), surrounding whitespace removed.
* A KuaiMod benchmark row: its ``pid``.
* A video found under a folder given as input: its path relative to that folder, with ``/``
  separators and without the file suffix (``clips/`` holding ``a.mp4`` and ``x/a.mp4`` gives ``a``
  and ``x/a``).
* A video file given directly: its file stem (``clips/a.mp4`` gives ``a``).
* Two inputs that would get the same id are told apart by their paths relative to the deepest folder
  they share (``x/a.mp4`` and ``y/a.mp4`` given as files: ``x/a`` and ``y/a``), and by their suffix
  if that is not enough (``a.mp4`` and ``a.mov``).

Paths are made absolute (without following symbolic links) before any of this, so the same folder
given as ``clips``, ``./clips`` or ``/data/clips`` yields the same ids: a job resumed by another
spelling of its inputs skips what it has done.

Artifact keys
-------------
Nothing on disk is named after an id (a sanitised id merges ``clip/1`` with ``clip_1``, and ``..``
names the folder above). A :class:`SampleKey` is the sha256 of the canonical id *and* the content
(the video's bytes; for a sample without a video, its text and frame images), so two samples share
an artifact only when both their id and their content are equal. Frames, caches, downloads, uploads
and the batch writer's per-sample files are all named from it (:attr:`SampleKey.name`); content
that is stored once whatever its id (a downloaded or uploaded video) is named by its content digest
(:func:`stored_name`). Every name is a single safe path component.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from kuaimod_open.errors import ConfigError, InputError

# Bump when the key derivation changes: old artifacts then simply stop matching (never collide).
KEY_VERSION = 1
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,7}$")
# Characters of the readable prefix of a name; the digest after it is what makes the name unique.
SLUG_CHARS = 40
# Hex digits of the key in a name: 128 bits, far beyond any collision risk for sample counts.
NAME_HEX = 32
_CHUNK = 1 << 20


class SampleKey(BaseModel):
    """The identity of one sample's content under one id; names every artifact derived from it."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1, description="The canonical sample id")
    content: str = Field(pattern=_DIGEST.pattern, description="sha256 of the content (video bytes, or text+frames)")
    digest: str = Field(pattern=_DIGEST.pattern, description="sha256 of the key version, the id and the content")

    @property
    def name(self) -> str:
        """A safe, unique path component for this sample's artifacts, e.g. ``clip_1-3f2a...`` (73 chars at most)."""
        return key_name(self.id, self.digest)


class _HasPath(Protocol):
    @property
    def path(self) -> Path: ...


class Keyable(Protocol):
    """What a key is computed from (a :class:`kuaimod_open.ingest.sample.Sample`)."""

    @property
    def id(self) -> str: ...  # noqa: D102

    @property
    def video(self) -> Path | None: ...  # noqa: D102

    @property
    def title(self) -> str: ...  # noqa: D102

    @property
    def ocr(self) -> str: ...  # noqa: D102

    @property
    def asr(self) -> str: ...  # noqa: D102

    @property
    def comments(self) -> Sequence[str]: ...  # noqa: D102

    @property
    def frames(self) -> Sequence[_HasPath]: ...  # noqa: D102


def key_name(sample_id: str, digest: str) -> str:
    """The artifact name of the key ``digest`` of ``sample_id`` (see :attr:`SampleKey.name`)."""
    if not _DIGEST.fullmatch(digest):
        raise ValueError(f"not a sample key digest: {digest[:80]!r}")
    slug = _SLUG_UNSAFE.sub("_", sample_id).strip("_")[:SLUG_CHARS] or "sample"
    return f"{slug}-{digest[:NAME_HEX]}"


def key_for(sample_id: str, content: str) -> SampleKey:
    """The key of ``sample_id`` whose content has the sha256 hex digest ``content``."""
    h = hashlib.sha256()
    raw_id = sample_id.encode("utf-8", "surrogatepass")
    # Length-prefixed fields: no choice of id can make two (id, content) pairs hash the same input.
    for part in (f"kuaimod-sample-key/{KEY_VERSION}".encode(), raw_id, content.encode("ascii")):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return SampleKey(id=sample_id, content=content, digest=h.hexdigest())


def sample_key(sample: Keyable, content: str | None = None) -> SampleKey:
    """The key of ``sample``; ``content`` is its content digest when the caller already has it.

    Raises:
        InputError: the video (or a frame image) is missing, unreadable or not a regular file.
    """
    return key_for(sample.id, content or content_digest(sample))


def content_digest(sample: Keyable) -> str:
    """sha256 of what a sample is about: its video's bytes, else its text fields and frame images."""
    if sample.video is not None:
        return file_digest(sample.video)
    h = hashlib.sha256()
    text = {"title": sample.title, "ocr": sample.ocr, "asr": sample.asr, "comments": list(sample.comments)}
    h.update(json.dumps(text, ensure_ascii=False, sort_keys=True).encode("utf-8", "surrogatepass"))
    for frame in sample.frames:
        h.update(bytes.fromhex(file_digest(frame.path)))
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    """sha256 of a regular file's bytes, read in chunks.

    A FIFO, device or folder is refused without being read (opening a FIFO for reading would wait
    for a writer for ever).

    Raises:
        InputError: the file is missing, unreadable or not a regular file.
    """
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputError(f"{path}: no such video file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise InputError(f"{path!s:.300}: cannot open ({plain_reason(exc)})") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(f"{path}: not a regular file (a FIFO, device or folder cannot be a video)")
        os.set_blocking(fd, True)
        h = hashlib.sha256()
        while chunk := handle.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def stored_name(content: str, suffix: str = "") -> str:
    """The file name of content stored once whatever its id (a download, an upload): its digest and suffix."""
    if not _DIGEST.fullmatch(content):
        raise ValueError(f"not a content digest: {content[:80]!r}")
    return content + safe_suffix(suffix)


def safe_suffix(name: str) -> str:
    """The lower-cased suffix of a file name or bare suffix if it is plain (``.mp4``), else ``""``."""
    last = name.replace("\\", "/").rsplit("/", 1)[-1]
    suffix = "." + last.rsplit(".", 1)[1].lower() if "." in last else ""
    return suffix if _SUFFIX.fullmatch(suffix) else ""


# --------------------------------------------------------------------------- canonical ids of files


def _abs(path: Path) -> Path:
    # abspath, not resolve: a symbolic link inside a folder keeps the name the user sees.
    return Path(os.path.abspath(path))


def video_inputs(inputs: Iterable[str | Path], suffixes: Iterable[str]) -> list[tuple[Path, str]]:
    """Expand files and folders into ``(video path, canonical id)`` pairs, in a stable order.

    See the module docstring for the rules. The same file reached twice (given as a file and found
    in a folder) is listed once.

    Raises:
        ConfigError: an input does not exist, no video was found, or two inputs cannot be told apart.
    """
    wanted = {s.lower() for s in suffixes}
    found: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for raw in inputs:
        given = Path(raw)
        root = _abs(given)
        if given.is_dir():
            for path in sorted(root.rglob("*")):
                if path.suffix.lower() in wanted and path not in seen and not path.is_dir():
                    seen.add(path)
                    found.append((path, path.relative_to(root).with_suffix("").as_posix()))
        elif given.exists():
            if root not in seen:
                seen.add(root)
                found.append((root, root.stem))
        else:
            raise ConfigError(f"Input not found: {given}")
    if not found:
        raise ConfigError("No video files found in the given inputs (looked for " + ", ".join(sorted(wanted)) + ")")
    return _disambiguate(found)


def _disambiguate(found: Sequence[tuple[Path, str]]) -> list[tuple[Path, str]]:
    ids = [sid for _, sid in found]
    out = list(found)
    for sid in {s for s in ids if ids.count(s) > 1}:
        members = [i for i, s in enumerate(ids) if s == sid]
        paths = [found[i][0] for i in members]
        common = Path(os.path.commonpath([str(p.parent) for p in paths]))
        qualified = [p.relative_to(common).with_suffix("").as_posix() for p in paths]
        if len(set(qualified)) < len(qualified):  # same stem in one folder: a.mp4 and a.mov keep their suffix
            qualified = [sid + p.suffix for p in paths]
        for i, q in zip(members, qualified, strict=True):
            out[i] = (found[i][0], q)
    final = [sid for _, sid in out]
    for sid in set(final):
        if final.count(sid) > 1:
            clash = [str(p) for p, s in out if s == sid]
            raise ConfigError(
                f"Inputs {', '.join(clash[:3])} get the same sample id {sid!r}; "
                "pass them in a manifest with explicit ids (--manifest)"
            )
    return out


def plain_reason(exc: BaseException) -> str:
    """Why a file could not be read, without a library's internals: the OS reason, else the error's kind."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return "the path contains a NUL byte" if "null" in str(exc).lower() else type(exc).__name__


__all__ = [
    "KEY_VERSION",
    "Keyable",
    "SampleKey",
    "content_digest",
    "file_digest",
    "key_for",
    "key_name",
    "plain_reason",
    "safe_suffix",
    "sample_key",
    "stored_name",
    "video_inputs",
]
