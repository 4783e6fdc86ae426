"""The prediction index keeps the labels it joined ({row: label}), so an answer indexed after
its request's label (a shadow's, run by the Monitor a tick after the request) is scored with it.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("prediction_index") as batch:
        batch.add_column(sa.Column("labels", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("prediction_index") as batch:
        batch.drop_column("labels")
