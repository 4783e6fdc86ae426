"""Shared artifacts: every registered version's files (ONNX, card, reference rows, profile)
in the store, so a version registered through any replica is served by every replica.
``model_versions`` holds a version's digest and each part's SHA-256 and size;
``model_artifact_chunks`` the bytes, a few MiB a row.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("model", sa.String(63), primary_key=True),
        sa.Column("version", sa.String(63), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("parts", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("replica", sa.String(128), nullable=False),
    )
    op.create_table(
        "model_artifact_chunks",
        sa.Column("model", sa.String(63), primary_key=True),
        sa.Column("version", sa.String(63), primary_key=True),
        sa.Column("part", sa.String(32), primary_key=True),
        sa.Column("chunk", sa.Integer, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("model_artifact_chunks")
    op.drop_table("model_versions")
