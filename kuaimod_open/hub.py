"""Load the KuaiMod benchmark from the Hugging Face hub, for users with network access.

Offline machines use a local ``benchmark.jsonl`` (+ frames folder) instead; both paths produce the
same Samples through :func:`kuaimod_open.ingest.sample_from_row`.
"""

from __future__ import annotations

from pathlib import Path

from ._lazy import require
from .errors import ConfigError
from .ingest import Sample, load_benchmark

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
