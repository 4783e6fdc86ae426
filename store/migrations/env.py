"""Alembic environment: runs on the connection handed in by ``store.engine.migrate``."""

from __future__ import annotations

from alembic import context

from store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the CLI path: `alembic -x url=...`
    import sqlalchemy as sa

    url = context.get_x_argument(as_dictionary=True)["url"]
    connection = sa.create_engine(url).connect()

context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
