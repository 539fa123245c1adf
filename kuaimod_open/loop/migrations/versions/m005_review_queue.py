"""The review queue as a table kept on write (issue #17), plus store-wide settings; backfilled here.

One row per sample with a verdict: what the queue filters and sorts on, in composite indexes
(``pending`` first), so a page is a range scan. The backfill parses each sample's latest verdict once
and ranks severities with the store's active policy (the shipped default when its file is gone).

Revision ID: m005_review_queue
Revises: m004_review_audit
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "m005_review_queue"
down_revision = "m004_review_audit"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
INDEXES = {
    "ix_review_queue_uncertainty": ["pending", "uncertainty", "severity_rank", "reports", "fifo_rank"],
    "ix_review_queue_severity": ["pending", "severity_rank", "uncertainty", "reports", "fifo_rank"],
    "ix_review_queue_reports": ["pending", "reports", "severity_rank", "uncertainty", "fifo_rank"],
    "ix_review_queue_oldest": ["pending", "verdict_id"],
    "ix_review_queue_category": ["pending", "category", "uncertainty", "severity_rank", "reports", "fifo_rank"],
}


def upgrade() -> None:
    op.create_table(
        "store_settings",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "review_queue",
        sa.Column("sample_id", sa.String(200), primary_key=True),
        sa.Column("verdict_id", sa.Integer, nullable=False),
        sa.Column("fifo_rank", sa.Integer, nullable=False),
        sa.Column("verdict_at", TS, nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("category", sa.String(64)),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("self_confidence", sa.Float),
        sa.Column("confidence", sa.Float),
        sa.Column("uncertainty", sa.Float, nullable=False),
        sa.Column("severity_rank", sa.Integer, nullable=False),
        sa.Column("review_required", sa.Boolean, nullable=False),
        sa.Column("why", sa.String(200), nullable=False),
        sa.Column("decided_at", TS),
        sa.Column("reports", sa.Integer, nullable=False),
        sa.Column("open_reports", sa.Integer, nullable=False),
        sa.Column("pending", sa.SmallInteger, nullable=False),
        sa.Column("claimed_by", sa.String(200)),
        sa.Column("claim_expires", TS),
    )
    _backfill()
    for name, columns in INDEXES.items():  # after the backfill: building an index once is cheaper
        op.create_index(name, "review_queue", columns)


def _backfill() -> None:
    from pathlib import Path

    from kuaimod_open.judge.policy import default_policy_path, load_policy
    from kuaimod_open.loop import queue
    from kuaimod_open.loop.store import Store

    conn = op.get_bind()
    path = conn.execute(
        sa.text("SELECT path FROM models WHERE kind = 'policy' AND status = 'active' ORDER BY id DESC")
    ).scalar()
    policy = load_policy(path if path and Path(path).is_file() else default_policy_path())
    queue.rebuild(Store.describing(conn.engine), policy, conn=conn)


def downgrade() -> None:
    op.drop_table("review_queue")
    op.drop_table("store_settings")
