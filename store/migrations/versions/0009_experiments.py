"""Experiments on business KPIs: per (model, version, variant, KPI) sufficient statistics
(``kpi_stats``), one outcome per request and KPI (``kpi_outcomes``), and each model's latest
experiment (``experiments``).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kpi_stats",
        sa.Column("model", sa.String(63), primary_key=True),
        sa.Column("version", sa.String(63), primary_key=True),
        sa.Column("variant", sa.String(16), primary_key=True),
        sa.Column("kpi", sa.String(63), primary_key=True),
        sa.Column("n", sa.Float, nullable=False),
        sa.Column("total", sa.Float, nullable=False),
        sa.Column("total_sq", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "kpi_outcomes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("model", sa.String(63), nullable=False),
        sa.Column("kpi", sa.String(63), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("version", sa.String(63), nullable=True),
        sa.Column("variant", sa.String(16), nullable=True),
        sa.Column("label", sa.Text, nullable=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.UniqueConstraint("request_id", "model", "kpi", name="uq_kpi_outcomes_request"),
    )
    op.create_index("ix_kpi_outcomes_version", "kpi_outcomes", ["version"])
    op.create_table(
        "experiments",
        sa.Column("model", sa.String(63), primary_key=True),
        sa.Column("doc", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("experiments")
    op.drop_index("ix_kpi_outcomes_version", "kpi_outcomes")
    op.drop_table("kpi_outcomes")
    op.drop_table("kpi_stats")
