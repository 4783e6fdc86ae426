"""Several replicas (log.backend: nats): a lease per log partition (owner, generation,
expiry) that fences the Monitor's commits, the replicas seen, and the event ids the Monitor
has counted (a record re-published after the stream's duplicate window is counted once).
Checkpoints hold JetStream stream sequences, so their ``seq`` grows to 64 bits.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "partition_leases",
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "cluster_replicas",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("url", sa.String(512), nullable=False),
        sa.Column("monitor_pid", sa.Integer, nullable=True),
        sa.Column("last_seen", sa.Float, nullable=False),
    )
    op.create_table(
        "log_event_ids",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_log_event_ids_at", "log_event_ids", ["at"])
    if op.get_bind().dialect.name == "postgresql":  # SQLite's INTEGER is 64-bit already
        op.alter_column("monitor_checkpoints", "seq", type_=sa.BigInteger)


def downgrade() -> None:
    op.drop_index("ix_log_event_ids_at", "log_event_ids")
    op.drop_table("log_event_ids")
    op.drop_table("cluster_replicas")
    op.drop_table("partition_leases")
