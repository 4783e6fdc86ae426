"""A compact per-minute history of the Monitor's counters (``store.history``), so the operator
console can draw the last hour by variant: one row per (model, version, variant, minute).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_history",
        sa.Column("model", sa.String(63), primary_key=True),
        sa.Column("version", sa.String(63), primary_key=True),
        sa.Column("variant", sa.String(16), primary_key=True),
        sa.Column("minute", sa.BigInteger, primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.BigInteger, nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("latency", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_monitor_history_model_minute", "monitor_history", ["model", "minute"])


def downgrade() -> None:
    op.drop_index("ix_monitor_history_model_minute", "monitor_history")
    op.drop_table("monitor_history")
