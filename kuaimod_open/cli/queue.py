"""``kuaimod queue``: the review queue from the shell, for operators and scripts."""

from __future__ import annotations

import json

import click

from kuaimod_open.cli.feedback import db_option
from kuaimod_open.loop.store import Store


@click.command("queue")
@db_option
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="Rows to print.")
@click.option("--category", default=None, help="Only verdicts with this main category code ('(no category)' for none).")
@click.option("--policy-version", default=None, help="Only verdicts made under this policy version.")
@click.option(
    "--sort",
    type=click.Choice(["uncertainty", "severity", "reports", "oldest"]),
    default="uncertainty",
    show_default=True,
)
@click.option("--cursor", default=None, help="Continue after a previous page (its next_cursor).")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table", show_default=True)
def queue_cmd(
    db: str, limit: int, category: str | None, policy_version: str | None, sort: str, cursor: str | None, fmt: str
) -> None:
    """Print the most urgent items awaiting review (the same indexed query as the review app).

    The table ends with the total and the cursor of the next page; in jsonl the last line is
    {"total": N, "next_cursor": ...}.

    \b
    Examples:
      kuaimod queue --db sqlite:///kuaimod.db
      kuaimod queue --db $KUAIMOD_DB --category HATE --sort severity --limit 20
      kuaimod queue --db $KUAIMOD_DB --format jsonl | jq .sample_id
    """
    from kuaimod_open.loop.queue import QUEUE_HEADERS, QueueFilters, queue_page

    page = queue_page(
        Store(db),
        filters=QueueFilters(category=category, policy_version=policy_version),
        sort=sort,
        cursor=cursor,
        limit=limit,
    )
    if fmt == "jsonl":
        for row in page.rows:
            item = {
                "sample_id": row.sample_id,
                "verdict_id": row.verdict_id,
                "title": row.title,
                "decision": row.decision,
                "category": row.category,
                "confidence": row.confidence,
                "severity": str(row.severity) if row.severity is not None else None,
                "uncertainty": row.uncertainty,
                "reports": row.reports,
                "open_reports": row.open_reports,
                "why": list(row.reasons),
                "policy_version": row.policy_version,
                "claimed_by": row.claimed_by,
            }
            click.echo(json.dumps(item, ensure_ascii=False))
        click.echo(json.dumps({"total": page.total, "next_cursor": page.next_cursor}))
        return
    table = [QUEUE_HEADERS, *[[str(v) for v in row.row()] for row in page.rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(QUEUE_HEADERS))]
    for r in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    shown = f"{len(page.rows)} of {page.total} pending"
    click.echo(shown + (f"; next page: --cursor {page.next_cursor}" if page.next_cursor else ""))
