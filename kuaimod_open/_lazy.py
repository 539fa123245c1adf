"""Import heavy optional packages only where they are used, with an install hint when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from kuaimod_open.errors import MissingDependencyError


def require(module: str, extra: str, purpose: str = "", package: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        # Only a missing top-level package is a "missing dependency"; a broken install of a
        # present package must surface with its real error.
        missing = getattr(exc, "name", None) or ""
        if missing and missing.split(".")[0] != module.split(".")[0]:
            raise
        raise MissingDependencyError(package or module.split(".")[0], extra, purpose) from exc
