"""Where a feedback event came from (import file, review UI, API): needed to audit imports.

Revision ID: m003_feedback_source
Revises: m002_verdict_adapter_and_prompt
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "m003_feedback_source"
down_revision = "m002_verdict_adapter_and_prompt"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("feedback", sa.Column("source", sa.String(200), server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("source")
