"""Rollouts, stored: one row per model (its latest rollout) whose document holds the spec,
the state, the step's baselines and the last analysis. Every write is a compare-and-set on
the row's revision, so the controller and an operator never overwrite each other: the loser
gets ``StaleRollout`` and reads again. The decisions are ``monitoring.rollout``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from models.errors import Conflict
from store.tables import rollouts
from store.transaction import Transaction, reading, transaction


class StaleRollout(Conflict):
    """The rollout was written by someone else since it was read (the controller retries; an
    operator's command that keeps losing is a 409)."""

    def __init__(self, model: str, revision: int) -> None:
        super().__init__("model", "changed meanwhile",
                         message=f"the rollout of {model} moved past revision {revision}")
        self.model = model
        self.revision = revision


@dataclass(frozen=True)
class StoredRollout:
    """A rollout's document and the revision a write must find unchanged."""

    model: str
    doc: dict[str, Any]
    revision: int


def _row(r: Any) -> StoredRollout:
    return StoredRollout(r.model, orjson.loads(r.doc), r.revision)


class RolloutStore:
    """Reads and compare-and-set writes of rollouts; ``tx`` joins a caller's transaction."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def all(self) -> list[StoredRollout]:
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(sa.select(rollouts)).all()]

    def get(self, model: str, tx: Transaction | None = None) -> StoredRollout | None:
        if tx is None:
            with reading(self.engine) as own:
                return self.get(model, own)
        row = tx.connection.execute(sa.select(rollouts).where(rollouts.c.model == model)).first()
        return _row(row) if row else None

    def save(self, model: str, doc: dict[str, Any], revision: int, now: float,
             tx: Transaction | None = None) -> None:
        """Write ``doc`` if the rollout is still at ``revision``, else ``StaleRollout`` (which
        rolls back whatever else ``tx`` did)."""
        if tx is None:
            with transaction(self.engine) as own:
                return self.save(model, doc, revision, now, own)
        text = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        if not tx.connection.execute(rollouts.update().where(
                rollouts.c.model == model, rollouts.c.revision == revision).values(
                doc=text, updated_at=now, revision=revision + 1)).rowcount:
            raise StaleRollout(model, revision)
        return None

    def begin(self, model: str, doc: dict[str, Any], now: float,
              previous: StoredRollout | None, tx: Transaction) -> None:
        """A new rollout replaces the model's last one. Its revision goes on counting from
        ``previous``'s: a controller holding the last rollout's revision must not match it."""
        tx.connection.execute(rollouts.delete().where(rollouts.c.model == model))
        tx.connection.execute(rollouts.insert().values(
            model=model, doc=orjson.dumps(doc).decode(), updated_at=now,
            revision=previous.revision + 1 if previous else 0))
