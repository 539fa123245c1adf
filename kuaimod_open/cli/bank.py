"""``kuaimod bank``: the hash bank of known videos (add, match, retire, import, export)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from kuaimod_open.cli.feedback import db_option
from kuaimod_open.cli.options import store_policy_path
from kuaimod_open.errors import ConfigError
from kuaimod_open.ingest.keys import video_inputs
from kuaimod_open.ingest.sample import VIDEO_EXTENSIONS
from kuaimod_open.judge.policy import load_policy
from kuaimod_open.loop.store import Store

_POLICY = click.option(
    "--policy",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Policy whose categories and match settings apply [default: the store's active policy].",
)


def _videos(inputs: tuple[Path, ...]) -> list[Path]:
    return [path for path, _ in video_inputs(inputs, VIDEO_EXTENSIONS)]


@click.group("bank")
def bank_group() -> None:
    """Known-content matching: a bank of PDQ-hashed videos and the decision taken on each.

    \b
    Examples:
      kuaimod bank add stolen.mp4 --category PLAGIARISM --decision restrict --author alice --db sqlite:///kuaimod.db
      kuaimod bank match upload.mp4 --db sqlite:///kuaimod.db
      kuaimod bank export bank.csv --db sqlite:///kuaimod.db
      kuaimod bank import partner_bank.jsonl --db sqlite:///kuaimod.db
    """


@bank_group.command("add")
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--category", required=True, help="Policy code or tag of the violation, e.g. PLAGIARISM.")
@click.option(
    "--decision",
    type=click.Choice(["block", "restrict", "review"]),
    required=True,
    help="What a match does (when the policy lets the category act alone; otherwise it goes to review).",
)
@click.option("--author", default="cli", show_default=True, help="Who banks the videos (audit trail).")
@click.option("--note", default="", help="Why, for reviewers.")
@click.option("--fps", type=click.FloatRange(0.1, 30), default=1.0, show_default=True, help="Frames hashed per second.")
@db_option
@_POLICY
def add_cmd(
    videos: tuple[Path, ...],
    category: str,
    decision: str,
    author: str,
    note: str,
    fps: float,
    db: str,
    policy: Path | None,
) -> None:
    """Hash VIDEOS (files or folders) and add each to the bank with a category and a decision."""
    from kuaimod_open.ingest.pdq import HashConfig, hash_video
    from kuaimod_open.loop.bank import add_entry, content_entry_id

    store = Store(db)
    pol = load_policy(store_policy_path(store, policy))
    paths = _videos(videos)
    hashed = [(path, hash_video(path, HashConfig(fps=fps))) for path in paths]  # all decoded before any insert
    for path, hashes in hashed:
        entry_id = add_entry(
            store,
            hashes,
            category=category,
            decision=decision,
            policy=pol,
            source="cli",
            author=author,
            video=str(path),
            note=note,
            entry_id=content_entry_id(hashes, category, decision),
        )
        state = "added" if entry_id else "already banked"
        click.echo(f"{path}: {state} ({len(hashes.frames)} frames, {len(hashes.usable())} usable)")


@bank_group.command("match")
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--fps", type=click.FloatRange(0.1, 30), default=1.0, show_default=True, help="Frames hashed per second.")
@click.option(
    "--index",
    type=click.Choice(["auto", "flat", "mih", "numpy"]),
    default="auto",
    show_default=True,
    help="Frame index: faiss flat / multi-index hashing, or numpy brute force (same results).",
)
@db_option
@_POLICY
def match_cmd(videos: tuple[Path, ...], fps: float, index: str, db: str, policy: Path | None) -> None:
    """Look VIDEOS up in the bank: one JSON line per video with its matches and the matched frame times."""
    from kuaimod_open.ingest.pdq import HashConfig, hash_video
    from kuaimod_open.loop.bank import load_bank, matches_as_rows

    store = Store(db)
    pol = load_policy(store_policy_path(store, policy))
    settings = pol.matching
    bank = load_bank(store, kind=index, max_distance=settings.max_distance)
    for path in _videos(videos):
        found = bank.match(hash_video(path, HashConfig(fps=fps)), settings)
        click.echo(json.dumps({"video": str(path), "matches": list(matches_as_rows(found))}, ensure_ascii=False))


@bank_group.command("retire")
@click.argument("entry_ids", nargs=-1, required=True)
@click.option("--author", default="cli", show_default=True)
@click.option("--reason", required=True, help="Why the entry no longer applies.")
@db_option
def retire_cmd(entry_ids: tuple[str, ...], author: str, reason: str, db: str) -> None:
    """Retire bank entries: they stop matching and stay in the audit trail."""
    from kuaimod_open.loop.bank import retire

    store = Store(db)
    for entry_id in entry_ids:
        n = retire(store, entry_id=entry_id, by=author, reason=reason)
        click.echo(f"{entry_id}: {'retired' if n else 'not active (unknown or already retired)'}")


@bank_group.command("export")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--active-only", is_flag=True, help="Leave retired entries out.")
@db_option
def export_cmd(out: Path, active_only: bool, db: str) -> None:
    """Write the bank to OUT: .csv (one row per frame, pdq signal) or .jsonl (one line per video, vpdq)."""
    from kuaimod_open.loop.bank import export_bank

    if out.suffix.lower() not in (".csv", ".jsonl"):
        raise ConfigError(f"{out}: name a .csv or .jsonl file")
    n = export_bank(Store(db), out, include_retired=not active_only)
    click.echo(f"{n} entries written to {out}")


@bank_group.command("import")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--author", default="", help="Author recorded for rows that name none.")
@db_option
@_POLICY
def import_cmd(path: Path, author: str, db: str, policy: Path | None) -> None:
    """Import a .csv or .jsonl bank file (validated whole first; entry ids already banked are skipped)."""
    from kuaimod_open.loop.bank import import_bank

    store = Store(db)
    pol = load_policy(store_policy_path(store, policy))
    result = import_bank(store, path, pol, author=author)
    click.echo(f"{result.read} entries read, {result.inserted} inserted, {result.duplicates} already banked")
