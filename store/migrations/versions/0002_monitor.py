"""Monitor state: checkpoints, per-version stats, status, the prediction index, pending labels.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_checkpoints",
        sa.Column("stream", sa.String(128), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "monitor_stats",
        sa.Column("model", sa.String(63), primary_key=True),
        sa.Column("version", sa.String(63), primary_key=True),
        sa.Column("variant", sa.String(16), primary_key=True),
        sa.Column("doc", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "monitor_state",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("doc", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "prediction_index",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("model", sa.String(63), nullable=False),
        sa.Column("version", sa.String(63), nullable=False),
        sa.Column("variant", sa.String(16), nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("outputs", sa.Text, nullable=False),
        sa.Column("labeled_rows", sa.Text, nullable=True),
    )
    op.create_index("ix_prediction_index_request_id", "prediction_index", ["request_id"])
    op.create_index("ix_prediction_index_ts", "prediction_index", ["ts"])
    op.create_table(
        "feedback_pending",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("model", sa.String(63), nullable=False),
        sa.Column("doc", sa.Text, nullable=False),
        sa.Column("received", sa.Float, nullable=False),
    )
    op.create_index("ix_feedback_pending_request_id", "feedback_pending", ["request_id"])


def downgrade() -> None:
    op.drop_table("feedback_pending")
    op.drop_table("prediction_index")
    op.drop_table("monitor_state")
    op.drop_table("monitor_stats")
    op.drop_table("monitor_checkpoints")
