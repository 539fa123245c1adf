"""Where kuaimod_open keeps what it can recompute: one root, named by one environment variable.

``$KUAIMOD_CACHE`` (default ``~/.cache/kuaimod``) holds every cache: extracted OCR/ASR text
(``extract/``), joined offline models (``models/``), sentence embeddings (``embeddings/``) and the
precedent indexes of PostgreSQL stores (``precedent_index/``). Everything below it may be deleted at
any time; it is rebuilt on demand.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "KUAIMOD_CACHE"


def cache_root() -> Path:
    """``$KUAIMOD_CACHE``, else ``~/.cache/kuaimod``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "kuaimod")


__all__ = ["CACHE_ENV", "cache_root"]
