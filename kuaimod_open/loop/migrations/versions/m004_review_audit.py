"""The review UI's audit trail: who did what, when (decisions, reveals, policy saves, rollbacks).

Revision ID: m004_review_audit
Revises: m003_feedback_source
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "m004_review_audit"
down_revision = "m003_feedback_source"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("sample_id", sa.String(200), index=True),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("review_audit")
