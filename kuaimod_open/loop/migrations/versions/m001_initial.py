"""The first schema: samples, verdicts, feedback, precedents, versioned artefacts, gate decisions, watermarks.

Identical to the DDL of the hand-rolled migration of the same name, so stores it created are adopted
as they are.

Revision ID: m001_initial
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "m001_initial"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "samples",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("ocr", sa.Text, nullable=False),
        sa.Column("asr", sa.Text, nullable=False),
        sa.Column("comments", sa.Text, nullable=False),
        sa.Column("video", sa.Text),
        sa.Column("frames", sa.Text, nullable=False),
        sa.Column("label", sa.String(64)),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "verdicts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sample_id", sa.String(200), nullable=False, index=True),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("category", sa.String(64)),
        sa.Column("confidence", sa.Float),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("policy_digest", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("sample_id", sa.String(200), nullable=False, index=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("category", sa.String(64)),
        sa.Column("decision", sa.String(16)),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "precedents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sample_id", sa.String(200), nullable=False, index=True),
        sa.Column("feedback_id", sa.Integer),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("embedding", sa.LargeBinary),
        sa.Column("retired_at", TS),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("meta", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "gate_decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("candidate", sa.Text, nullable=False),
        sa.Column("baseline", sa.Text, nullable=False),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "watermarks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Integer, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in ("watermarks", "gate_decisions", "models", "precedents", "feedback", "verdicts", "samples"):
        op.drop_table(table)
