"""The KuaiMod benchmark: its rows as Samples, from a local JSONL file or the Hugging Face hub.

A KuaiMod benchmark row looks like this (text abridged)::

    {"pid": "001", "tag": "色情低俗", "title": "他真不行 #憨憨日常",
     "OCR": "到底行不行。刚才还好使了的呢|...", "ASR": "...",
     "images": ["001_0.jpg", "001_1.jpg", ..., "001_8.jpg"]}

Offline machines use a local ``benchmark.jsonl`` (+ frames folder) or a dataset folder; users with
network access can pass ``hf://KuaiMod/KuaiMod``. Every path produces Samples through
:func:`sample_from_row`.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from kuaimod_open._lazy import require
from kuaimod_open.errors import ConfigError, InputError
from kuaimod_open.ingest.sample import IMAGE_EXTENSIONS, Frame, Sample, _check_unique_ids, read_jsonl

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
DEFAULT_SPLIT = "test"
# The frames of a dataset folder or hub repository: a folder of images, or an archive of them (the KuaiMod
# repository has test/benchmark.jsonl and test/images.tar.gz, 2.1 GB).
IMAGE_FOLDERS = ("images", "frames")
IMAGE_ARCHIVES = ("images.tar.gz", "images.tgz", "images.tar", "images.zip")


def load_eval_data(
    data: str, frames_root: str | Path | None = None, *, split: str = DEFAULT_SPLIT
) -> tuple[list[Sample], Path | None]:
    """Benchmark samples and the frames folder used.

    ``data`` is one of:

    * a KuaiMod-format ``.jsonl`` file (frames under ``frames_root``, else ``images/`` next to the file);
    * a dataset folder, or ``hf://<dataset id>`` (downloaded once): loaded with ``datasets``, which reads
      the folder's layout (``<split>/*.jsonl`` files, or the card's ``configs``), so ``split`` picks the
      rows. Frames come from ``frames_root``, else an ``images``/``frames`` folder or an
      ``images.tar.gz`` archive in the split's folder or the top (extracted once into the cache).
    """
    if data.startswith(HUB_PREFIX):
        return _from_hub(data.removeprefix(HUB_PREFIX) or DEFAULT_DATASET, split, frames_root)
    path = Path(data)
    if path.is_dir():
        return _from_folder(path, split, frames_root)
    if not path.is_file():
        raise ConfigError(
            f"Benchmark not found: {path} (pass a KuaiMod-format .jsonl, a dataset folder, or hf://{DEFAULT_DATASET})"
        )
    root = Path(frames_root) if frames_root is not None else path.parent / "images"
    if frames_root is not None and not root.is_dir():
        raise ConfigError(f"Frames folder not found: {root}")
    return load_benchmark(path, root if root.is_dir() else None), root if root.is_dir() else None


def _from_hub(repo_id: str, split: str, frames_root: str | Path | None) -> tuple[list[Sample], Path | None]:
    hub = require("huggingface_hub", extra="eval", purpose="downloading the benchmark from the hub")
    patterns = ["*.md", "*.json", "*.jsonl", "*.parquet"]
    if frames_root is None:  # the frames are most of the download: only when none were given
        patterns += [f"*{name}" for name in IMAGE_ARCHIVES]
    try:
        local = Path(hub.snapshot_download(repo_id=repo_id, repo_type="dataset", allow_patterns=patterns))
    except Exception as exc:  # the hub client raises many unrelated types for "offline / not found"
        raise ConfigError(
            f"Cannot download dataset {repo_id} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            "On an offline machine, pass a local benchmark file or dataset folder with --data instead."
        ) from None
    return _from_folder(local, split, frames_root, name=f"hf://{repo_id}")


def _from_folder(
    folder: Path, split: str, frames_root: str | Path | None, *, name: str | None = None
) -> tuple[list[Sample], Path | None]:
    datasets = require("datasets", extra="eval", purpose="loading a benchmark dataset folder or hub id")
    name = name or str(folder)
    text = datasets.Value("string")
    # Declared, not inferred: inference takes the first file's types (a split whose frame lists are all
    # empty makes `images` a list of nulls, and the other splits then fail to load).
    features = datasets.Features({**dict.fromkeys(_ROW_FIELDS[:-1], text), "images": datasets.List(text)})
    try:
        rows = datasets.load_dataset(str(folder), split=split, features=features)
    except ValueError as exc:  # an unknown split names the known ones
        raise ConfigError(f"{name}: {exc}") from None
    except datasets.exceptions.DatasetGenerationError as exc:
        cause = exc.__cause__ or exc
        raise ConfigError(
            f"{name}: the rows are not KuaiMod benchmark rows with exactly the fields {', '.join(_ROW_FIELDS)} "
            f"({str(cause).splitlines()[0][:200]})"
        ) from None
    except FileNotFoundError as exc:
        raise ConfigError(f"{name}: no data files for split {split!r} ({exc})") from None
    root = Path(frames_root) if frames_root is not None else None
    if root is not None and not root.is_dir():
        raise ConfigError(f"Frames folder not found: {root}")
    records = [dict(row) for row in rows]
    if root is None:
        wanted = next((str(image) for row in records for image in row.get("images") or []), None)
        root = _find_frames(folder, split, wanted) if wanted else None
    samples = [sample_from_row(row, root, line=n) for n, row in enumerate(records, start=1)]
    _check_unique_ids(samples, f"{name} ({split})")
    return samples, root


def _find_frames(folder: Path, split: str, wanted: str) -> Path | None:
    """The folder that holds the frame file ``wanted``: an image folder, or an archive extracted once."""
    for base in (folder / split, folder):
        for sub in IMAGE_FOLDERS:
            found = _holding(base / sub, wanted)
            if found is not None:
                return found
        for archive in IMAGE_ARCHIVES:
            if (base / archive).is_file():
                return _holding(_extracted(base / archive), wanted)
    return None


def _holding(folder: Path, wanted: str) -> Path | None:
    """``folder`` or the sub-folder of it that holds ``wanted`` (archives often add one level)."""
    if not folder.is_dir():
        return None
    if (folder / wanted).is_file():
        return folder
    hit = next(folder.rglob(Path(wanted).name), None)
    return hit.parent if hit is not None else None


def _extracted(archive: Path) -> Path:
    """The archive's images, extracted once into the cache (``$KUAIMOD_CACHE/benchmarks/``)."""
    import hashlib
    import shutil
    import tarfile
    import tempfile
    import zipfile

    from kuaimod_open.core.cache import cache_root

    stat = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    dst = cache_root() / "benchmarks" / f"{archive.name.split('.')[0]}-{key}"
    if dst.is_dir():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extracting-", dir=dst.parent))
    try:
        if archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as zf:
                for member in zf.infolist():
                    if _is_image(member.filename) and not member.is_dir():
                        zf.extract(member, tmp)  # zipfile strips absolute paths and '..'
        else:
            with tarfile.open(archive) as tf:
                members = [m for m in tf.getmembers() if m.isfile() and _is_image(m.name)]
                tf.extractall(tmp, members=members, filter="data")  # no links, no paths outside tmp
        os.replace(tmp, dst)  # a half-extracted archive is never taken for a whole one
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def _is_image(name: str) -> bool:
    """An image file name that stays inside the extraction folder (no absolute path, no '..')."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    safe = bool(parts) and not name.startswith(("/", "\\")) and ".." not in parts
    return safe and Path(name).suffix.lower() in IMAGE_EXTENSIONS
