"""The retraining policies' state: per model, what each policy remembers between ticks
(when a condition started to hold, the last firing, the cooldown). One document, read and
written by the Monitor in the transaction that writes the events it fires."""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa

from store.engine import put_rows
from store.tables import monitor_state
from store.transaction import Transaction

NAME = "policy"  # its row in monitor_state


class PolicyStateStore:
    def get(self, tx: Transaction) -> dict[str, Any]:
        """Model -> that model's policy state; empty before the first evaluation."""
        row = tx.connection.execute(sa.select(monitor_state.c.doc).where(
            monitor_state.c.name == NAME)).first()
        return orjson.loads(row.doc) if row else {}

    def put(self, tx: Transaction, state: dict[str, Any], now: float) -> None:
        put_rows(tx.connection, monitor_state, ("name",), ("doc", "updated_at"),
                 [(NAME, orjson.dumps(state).decode(), now)])
