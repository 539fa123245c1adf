"""Start the review app: loopback by default, credentials required anywhere else."""

from __future__ import annotations

import os
from typing import Any

from .config import ReviewConfig, check_access
from .handlers import ReviewContext
from .media import resolve_roots


def serve(config: ReviewConfig, host: str = "127.0.0.1", port: int | None = None, *, block: bool = True) -> Any:
    """Build and launch the app; returns the Gradio Blocks (running in the background when ``block`` is False).

    Raises:
        ConfigError: a non-loopback ``host`` without credentials, or a bad store URL.
    """
    check_access(host, config.users)
    # Keep the app offline: no usage analytics, no update check.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from .review import build_app, launch_options

    ctx = ReviewContext(config)
    demo = build_app(ctx)
    demo.queue(default_concurrency_limit=1)  # one writer at a time keeps decisions and the audit trail ordered
    demo.launch(
        server_name=host,
        server_port=port,
        auth=sorted(config.users.items()) or None,
        auth_message="kuaimod review: sign in with your reviewer account",
        # Videos are played only from the configured media roots; frames are inlined after the same check.
        allowed_paths=[str(p) for p in resolve_roots(config.media_roots)],
        prevent_thread_lock=not block,
        show_error=True,
        quiet=not block,
        ssr_mode=False,
        footer_links=[],
        **launch_options(),
    )
    return demo
