"""The review UI: queue, item view, decisions, policy editor, evaluation reports (Gradio).

Handlers (:mod:`.handlers`, :mod:`.policy_editor`, :mod:`.queue`, :mod:`.evaluation`)
are plain functions over the feedback store and need no Gradio; :func:`build_app` and
:func:`serve` import Gradio when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import ReviewConfig

if TYPE_CHECKING:
    from .review import build_app
    from .server import serve

__all__ = ["ReviewConfig", "build_app", "serve"]


def __getattr__(name: str) -> Any:
    # Gradio is heavy (and optional): load it only when the app itself is wanted.
    if name == "build_app":
        from .review import build_app

        return build_app
    if name == "serve":
        from .server import serve

        return serve
    raise AttributeError(f"module 'app' has no attribute {name!r}")
