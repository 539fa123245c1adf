"""``kuaimod update ...``: the common-law updaters (safe to run from cron; each records a watermark)."""

from __future__ import annotations

import click


@click.group("update")
def update_group() -> None:
    """Turn stored feedback into new policy versions, routers or LoRA adapters, behind an evaluation gate."""
