"""Table definitions. Change them only together with a new migration in ``migrations/versions``."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("model", sa.String(63), primary_key=True),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("doc", sa.Text, nullable=False),  # JSON: champion, canary, shadows, header, salt
    sa.Column("updated_at", sa.Float, nullable=False),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("role", sa.String(16), nullable=True),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(256), nullable=False),
    sa.Column("before", sa.Text, nullable=True),
    sa.Column("after", sa.Text, nullable=True),
    sa.Column("request_id", sa.String(128), nullable=True),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=True),
)
