"""Known-content matching: banked videos with their PDQ frame hashes, and each sample's own hashes.

Revision ID: m006_hash_bank
Revises: m005_review_queue
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "m006_hash_bank"
down_revision = "m005_review_queue"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "bank_entries",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("sample_id", sa.String(200), index=True),
        sa.Column("video", sa.Text),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("fps", sa.Float, nullable=False),
        sa.Column("duration", sa.Float),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("retired_at", ts),
        sa.Column("retired_by", sa.String(200)),
        sa.Column("retired_reason", sa.Text),
    )
    op.create_table(
        "bank_hashes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("entry_id", sa.String(64), nullable=False, index=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("timestamp", sa.Float, nullable=False),
        sa.Column("quality", sa.Integer, nullable=False),
        sa.Column("pdq", sa.String(64), nullable=False),
        sa.Column("mirror", sa.String(64)),
    )
    # The sample's own hashes (JSON VideoHashes): a reviewer's block banks them without decoding again.
    op.add_column("samples", sa.Column("hashes", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.drop_column("hashes")
    op.drop_table("bank_hashes")
    op.drop_table("bank_entries")
