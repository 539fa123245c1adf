"""The KuaiMod benchmark: its rows as Samples, from a local JSONL file or the Hugging Face hub.

A KuaiMod benchmark row looks like this (text abridged)::

    {"pid": "001", "tag": "色情低俗", "title": "他真不行 #憨憨日常",
     "OCR": "到底行不行。刚才还好使了的呢|...", "ASR": "...",
     "images": ["001_0.jpg", "001_1.jpg", ..., "001_8.jpg"]}

Offline machines use a local ``benchmark.jsonl`` (+ frames folder); users with network access can
pass ``hf://KuaiMod/KuaiMod``. Both paths produce the same Samples through :func:`sample_from_row`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kuaimod_open._lazy import require
from kuaimod_open.errors import ConfigError, InputError
from kuaimod_open.ingest.sample import Frame, Sample, _check_unique_ids, read_jsonl

_ROW_FIELDS = ("pid", "tag", "title", "OCR", "ASR", "images")


def sample_from_row(row: dict[str, Any], frames_root: Path | None = None, *, line: int | None = None) -> Sample:
    """Build a Sample from a KuaiMod benchmark row; frames are looked up under ``frames_root``.

    Missing frame files are skipped (the benchmark's frames live on the hub only), so a row
    without frames becomes a text-only sample. Raises :class:`InputError` for a row without a
    usable id or with fields of the wrong type.
    """
    where = f"row {line}" if line is not None else "row"
    pid = row.get("pid", row.get("id"))
    if pid is None or str(pid).strip() == "":
        raise InputError(f"{where}: missing 'pid' (every benchmark row needs an id)")
    for key in ("title", "OCR", "ASR", "tag"):
        value = row.get(key)
        if value is not None and not isinstance(value, str):
            raise InputError(f"{where} (pid {pid}): field '{key}' must be text, got {type(value).__name__}")
    images = row.get("images") or []
    if not isinstance(images, list):
        raise InputError(f"{where} (pid {pid}): field 'images' must be a list of file names")
    frames: list[Frame] = []
    if frames_root is not None:
        for name in images:
            path = Path(frames_root) / str(name)
            if path.is_file():
                frames.append(Frame(path=path))
    comments = row.get("comments") or ()
    return Sample(
        id=str(pid),
        frames=tuple(frames),
        title=row.get("title") or "",
        ocr=row.get("OCR") or "",
        asr=row.get("ASR") or "",
        comments=tuple(str(c) for c in comments),
        label=row.get("tag"),
    )


def load_benchmark(path: str | Path, frames_root: str | Path | None = None) -> list[Sample]:
    """Read a KuaiMod-format JSONL file (``pid, tag, title, OCR, ASR, images``) into Samples."""
    root = Path(frames_root) if frames_root is not None else None
    samples = [sample_from_row(row, root, line=n) for n, row in read_jsonl(path)]
    _check_unique_ids(samples, str(path))
    return samples


HUB_PREFIX = "hf://"
DEFAULT_DATASET = "KuaiMod/KuaiMod"


def load_eval_data(data: str, frames_root: str | Path | None = None) -> tuple[list[Sample], Path | None]:
    """Samples from a local JSONL path or ``hf://<dataset id>``; returns them and the frames folder used.

    For a local file without ``frames_root``, an ``images/`` folder next to the file is used when present.
    """
    if data.startswith(HUB_PREFIX):
        return _from_hub(data.removeprefix(HUB_PREFIX) or DEFAULT_DATASET)
    path = Path(data)
    if not path.is_file():
        raise ConfigError(f"Benchmark file not found: {path} (pass a KuaiMod-format .jsonl, or hf://{DEFAULT_DATASET})")
    root = Path(frames_root) if frames_root is not None else path.parent / "images"
    if frames_root is not None and not root.is_dir():
        raise ConfigError(f"Frames folder not found: {root}")
    return load_benchmark(path, root if root.is_dir() else None), root if root.is_dir() else None


def _from_hub(repo_id: str) -> tuple[list[Sample], Path | None]:
    hub = require("huggingface_hub", extra="hf", purpose="downloading the benchmark from the hub")
    try:
        local = Path(hub.snapshot_download(repo_id=repo_id, repo_type="dataset"))
    except Exception as exc:  # the hub client raises many unrelated types for "offline / not found"
        raise ConfigError(
            f"Cannot download dataset {repo_id} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            "On an offline machine, pass a local benchmark.jsonl with --data instead."
        ) from None
    files = sorted(local.rglob("*.jsonl"))
    if not files:
        raise ConfigError(f"Dataset {repo_id} has no .jsonl file; pass a local benchmark file with --data")
    images = next((p for p in local.rglob("*") if p.is_dir() and p.name in {"images", "frames"}), None)
    return load_benchmark(files[0], images), images
