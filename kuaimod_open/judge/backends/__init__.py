"""Model backends, resolved lazily by name so that importing this package loads no ML library."""

from __future__ import annotations

import importlib
from typing import Any

from kuaimod_open.errors import ConfigError
from kuaimod_open.judge.backends.base import Backend, GenerateConfig, Generation, Request, WindowedBackend

# name -> "module:Class". Heavy imports (torch, transformers, openai) happen when a backend is built.
BACKENDS: dict[str, str] = {
    "hf": "kuaimod_open.judge.backends.hf:HFBackend",
    "openai": "kuaimod_open.judge.backends.openai_api:OpenAIBackend",
    "scripted": "kuaimod_open.judge.backends.scripted:ScriptedBackend",
}

# A small instruct checkpoint a single 24 GB GPU runs comfortably in bf16.
DEFAULT_HF_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"


def get_backend(name: str, **options: Any) -> Backend:
    """Build the backend called ``name`` with its constructor options (e.g. ``model=...``)."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ConfigError(f"Unknown backend '{name}'. Choose one of: {', '.join(sorted(BACKENDS))}") from None
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = cls(**options)
    return backend


__all__ = [
    "BACKENDS",
    "DEFAULT_HF_MODEL",
    "Backend",
    "GenerateConfig",
    "Generation",
    "Request",
    "WindowedBackend",
    "get_backend",
]
