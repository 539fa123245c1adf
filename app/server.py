"""Start the review app: loopback by default, credentials required anywhere else."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .access import LoginLimiter, authenticator, check_access
from .audit import log_action
from .config import ReviewConfig
from .handlers import ReviewContext


def serve(
    config: ReviewConfig,
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    block: bool = True,
    limiter: LoginLimiter | None = None,
) -> Any:
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
    # Each listener runs one call at a time; the review tab's events also share one ordered lane (review.LANE).
    demo.queue(default_concurrency_limit=1)

    def refused(name: str, why: str) -> None:
        log_action(ctx.store, name[:200] or "(empty)", "login_refused", None, reason=why)

    auth = authenticator(config.users, limiter or LoginLimiter(), refused) if config.users else None
    # Videos are played from the configured media roots and the folders the store records; the item view
    # checks every path against the same roots first, and a folder recorded later is added when first shown.
    roots = [str(p) for p in ctx.roots()]

    def allow(folder: Path) -> None:
        if str(folder) not in demo.allowed_paths:
            demo.allowed_paths.append(str(folder))

    ctx.allow_media_root = allow
    demo.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        auth_message="kuaimod review: sign in with your reviewer account",
        allowed_paths=roots,
        prevent_thread_lock=not block,
        show_error=True,
        quiet=not block,
        ssr_mode=False,
        footer_links=[],
        run_history=False,  # reviewers' items must not be kept in the browser's storage
        **launch_options(),
    )
    return demo
