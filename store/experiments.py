"""Experiments, stored: one row per model (its latest experiment) whose document holds the
design, the state, the arms' baselines and the last look. Every write is a compare-and-set on
the row's revision, so the Monitor's controller and an operator's stop never overwrite each
other: the loser gets ``StaleExperiment`` and reads again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from models.errors import Conflict
from store.tables import experiments
from store.transaction import Transaction, reading


class StaleExperiment(Conflict):
    def __init__(self, model: str, revision: int) -> None:
        super().__init__("model", "changed meanwhile",
                         message=f"the experiment of {model} moved past revision {revision}")


@dataclass(frozen=True)
class StoredExperiment:
    model: str
    doc: dict[str, Any]
    revision: int


def _row(r: Any) -> StoredExperiment:
    return StoredExperiment(r.model, orjson.loads(r.doc), r.revision)


class ExperimentStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def all(self) -> list[StoredExperiment]:
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(sa.select(experiments)).all()]

    def get(self, model: str, tx: Transaction | None = None) -> StoredExperiment | None:
        if tx is None:
            with reading(self.engine) as own:
                return self.get(model, own)
        row = tx.connection.execute(
            sa.select(experiments).where(experiments.c.model == model)).first()
        return _row(row) if row else None

    def save(self, model: str, doc: dict[str, Any], revision: int, now: float,
             tx: Transaction) -> None:
        """Write ``doc`` if the experiment is still at ``revision``, else
        ``StaleExperiment`` (which rolls back whatever else ``tx`` did)."""
        text = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        if not tx.connection.execute(experiments.update().where(
                experiments.c.model == model, experiments.c.revision == revision).values(
                doc=text, updated_at=now, revision=revision + 1)).rowcount:
            raise StaleExperiment(model, revision)

    def begin(self, model: str, doc: dict[str, Any], now: float,
              previous: StoredExperiment | None, tx: Transaction) -> None:
        """A new experiment replaces the model's last one; its revision counts on."""
        tx.connection.execute(experiments.delete().where(experiments.c.model == model))
        tx.connection.execute(experiments.insert().values(
            model=model, doc=orjson.dumps(doc).decode(), updated_at=now,
            revision=previous.revision + 1 if previous else 0))
