"""Job inputs: manifests (CSV, JSONL, Parquet), video files and folders, as a list of work items.

A manifest row names one video and what is known about it. Column names are case-insensitive:

* ``id`` (or ``pid``, ``sample_id``): unique, stable; resuming a job relies on it;
* ``path`` (or ``video``, ``file``): a local file, relative to the manifest's folder; or ``url``
  (``http://``, ``https://``), fetched by the worker that prepares the video; a ``file://`` URL is
  read as a local path (nothing is fetched);
* ``title``, ``ocr``, ``asr``, ``comments`` (a list, a JSON list, or ``|``-separated), ``label`` (or ``tag``);
* ``images``: pre-extracted frame files (KuaiMod benchmark rows), looked up under ``--frames-root``.

A KuaiMod benchmark JSONL file is a manifest whose rows have no path: they become text+frames samples.
Sample ids follow :mod:`kuaimod_open.ingest.keys` (canonical ids).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kuaimod_open._lazy import require
from kuaimod_open.errors import ConfigError, InputError
from kuaimod_open.ingest.benchmark import sample_from_row
from kuaimod_open.ingest.keys import video_inputs
from kuaimod_open.ingest.sample import VIDEO_EXTENSIONS, Sample, read_jsonl

MANIFEST_SUFFIXES = frozenset({".csv", ".jsonl", ".parquet"})
_ALIASES = {
    "pid": "id",
    "sample_id": "id",
    "video": "path",
    "file": "path",
    "tag": "label",
}


@dataclass(frozen=True)
class WorkItem:
    """One input of a job: the sample, plus the URL to fetch its video from when it is remote."""

    sample: Sample
    url: str | None = None


def _normalise_row(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        name = str(key).strip().lower()
        name = _ALIASES.get(name, name)
        if value is None or (isinstance(value, str) and value.strip() == "" and name != "title"):
            continue
        out.setdefault(name, value)
    return out


def _comments(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(str(c) for c in value)
    text = str(value).strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            raise InputError(f"{where}: 'comments' looks like JSON but does not parse") from None
        return tuple(str(c) for c in parsed)
    return tuple(c.strip() for c in text.split("|") if c.strip())


def item_from_row(row: dict[str, Any], base: Path, frames_root: Path | None, where: str) -> WorkItem:
    """Turn one manifest row into a WorkItem (see the module docstring for the columns)."""
    norm = _normalise_row(row)
    if str(norm.get("id", "")).strip() == "":
        raise InputError(f"{where}: missing 'id' (every row needs a unique, stable id so the job can resume)")
    for key in ("title", "ocr", "asr", "label"):
        if key in norm and not isinstance(norm[key], str):
            norm[key] = str(norm[key])
    path, url = norm.get("path"), norm.get("url")
    if path is None and url is None:
        # A benchmark-style row: text and pre-extracted frames.
        bench = {"pid": str(norm["id"]), "title": norm.get("title"), "OCR": norm.get("ocr"), "ASR": norm.get("asr")}
        bench.update({"tag": norm.get("label"), "images": norm.get("images"), "comments": None})
        sample = sample_from_row(bench, frames_root)
        return WorkItem(sample.model_copy(update={"comments": _comments(norm.get("comments"), where)}))
    video = None
    if path is None and str(url).startswith("file://"):
        # A local file named as a URL: read in place, never "fetched" (a FIFO there must not hang a worker).
        path = _file_url_path(str(url), where)
    if path is not None:
        video = Path(str(path)).expanduser()
        video = video if video.is_absolute() else base / video
    elif not str(url).startswith(("http://", "https://")):
        raise InputError(f"{where}: url must start with http://, https:// or file:// (got {str(url)[:80]!r})")
    sample = Sample(
        id=str(norm["id"]).strip(),
        video=video,
        title=norm.get("title") or "",
        ocr=norm.get("ocr") or "",
        asr=norm.get("asr") or "",
        comments=_comments(norm.get("comments"), where),
        label=norm.get("label"),
    )
    return WorkItem(sample, url=None if path is not None else str(url))


def _file_url_path(url: str, where: str) -> str:
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise InputError(f"{where}: a file:// URL must name a local file (got host {parts.netloc[:80]!r})")
    path = unquote(parts.path)
    if "\x00" in path or not path:
        raise InputError(f"{where}: the file:// URL has no usable path")
    return path


def _rows(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for number, row in read_jsonl(path):
            yield f"{path}:{number}", row
    elif suffix == ".csv":
        try:
            with path.open(encoding="utf-8-sig", newline="") as handle:
                for number, row in enumerate(csv.DictReader(handle), start=2):  # line 1 is the header
                    yield f"{path}:{number}", dict(row)
        except OSError as exc:
            raise ConfigError(f"Cannot open {path}: {exc.strerror or exc}") from None
    elif suffix == ".parquet":
        pq = require("pyarrow.parquet", extra="batch", purpose="reading Parquet manifests", package="pyarrow")
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError variants for bad files
            raise ConfigError(f"Cannot read the Parquet manifest {path}: {str(exc)[:200]}") from None
        for number, row in enumerate(table.to_pylist(), start=1):
            yield f"{path}:row {number}", row
    else:
        raise ConfigError(f"{path}: a manifest must be .csv, .jsonl or .parquet")


def load_manifest(path: str | Path, frames_root: Path | None = None) -> list[WorkItem]:
    """Read every row of a CSV / JSONL / Parquet manifest; relative paths are against its folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Manifest not found: {path}")
    return [item_from_row(row, path.parent, frames_root, where) for where, row in _rows(path)]


def collect_items(
    inputs: Sequence[Path], manifests: Sequence[Path] = (), frames_root: Path | None = None
) -> list[WorkItem]:
    """Manifests (given as inputs or with --manifest) plus video files and folders, ids checked unique."""
    items: list[WorkItem] = []
    tables = [*manifests, *(p for p in inputs if p.suffix.lower() in MANIFEST_SUFFIXES and p.is_file())]
    for table in tables:
        items.extend(load_manifest(table, frames_root))
    others = [p for p in inputs if p not in tables]
    if others:
        items.extend(WorkItem(Sample(id=sid, video=p)) for p, sid in video_inputs(others, VIDEO_EXTENSIONS))
    seen: set[str] = set()
    for item in items:
        if item.sample.id in seen:
            raise ConfigError(f"Duplicate sample id '{item.sample.id}' in the inputs: ids must be unique to resume")
        seen.add(item.sample.id)
    return items


__all__ = ["MANIFEST_SUFFIXES", "WorkItem", "collect_items", "item_from_row", "load_manifest"]
