"""kuaimod_open: open short-video content moderation with a VLM as policy.

Importing this package loads no ML library (torch, transformers, decord, gradio): the heavy
stages import them when they are used. The public API is re-exported lazily.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("kuaimod_open")
except PackageNotFoundError:  # running from a checkout without installing
    __version__ = "0.0.0+checkout"

_EXPORTS = {
    "KuaimodError": "errors",
    "Sample": "ingest.sample",
    "Frame": "ingest.sample",
    "sample_frames": "ingest.frames",
    "load_benchmark": "ingest.benchmark",
    "Policy": "judge.policy",
    "Decision": "judge.policy",
    "load_policy": "judge.policy",
    "load_template": "judge.prompt",
    "build_messages": "judge.prompt",
    "get_backend": "judge.backends",
    "Verdict": "judge.verdict",
    "parse_verdict": "judge.verdict",
    "ModerationConfig": "judge.pipeline",
    "moderate": "judge.pipeline",
    "run_job": "serving.runner",
    "VerdictWriter": "serving.writer",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'kuaimod_open' has no attribute {name!r}")
