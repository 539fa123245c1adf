"""Verdict provenance grew: adapters and prompt digests are queried by the gate and the UI.

Revision ID: m002_verdict_adapter_and_prompt
Revises: m001_initial
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "m002_verdict_adapter_and_prompt"
down_revision = "m001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("verdicts", sa.Column("adapter", sa.Text))
    op.add_column("verdicts", sa.Column("prompt_digest", sa.String(32)))


def downgrade() -> None:
    with op.batch_alter_table("verdicts") as batch:
        batch.drop_column("prompt_digest")
        batch.drop_column("adapter")
