"""The prediction index and the labels waiting for it: what the Monitor's label join reads and
writes, always in the transaction of its step.

The index keeps one row per answer (request id, model, version, variant, time, its outputs)
for ``monitor.index_retention_days``, with the rows already labelled and the labels joined to
it; a label whose prediction was not read yet waits in ``feedback_pending``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from store.engine import insert_rows
from store.tables import feedback_pending, prediction_index
from store.transaction import Engine, Transaction, transaction

# request id, model, version, variant, time, and the outputs (one answer per input row) as
# JSON text: the Monitor encodes them as it parses the log, so a step of 20,000 records does not
# keep 20,000 parsed outputs alive until its commit (the collector's passes over them cost a
# catch-up 15% more CPU)
IndexRow = tuple[str, str, str, str, float, str]
# an IndexRow, then the rows already labelled and the labels joined to it ({row: label})
LabelledRow = tuple[str, str, str, str, float, str, list[int], dict[str, Any] | None]
COLUMNS = ("request_id", "model", "version", "variant", "ts", "outputs")
LABELLED_COLUMNS = (*COLUMNS, "labeled_rows", "labels")
CHUNK = 500  # request ids or row ids in one IN (...)


@dataclass(slots=True)
class IndexedAnswer:
    id: int
    request_id: str
    model: str
    version: str
    variant: str
    outputs: list[Any]
    labeled_rows: list[int]
    labels: dict[str, Any]


@dataclass(frozen=True, slots=True)
class HeldLabel:
    """A label that arrived before its prediction was read."""

    id: int
    model: str
    data: dict[str, Any]  # the feedback record's data
    received: float


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


class PredictionIndex:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, tx: Transaction, rows: Sequence[IndexRow]) -> None:
        insert_rows(tx.connection, prediction_index, COLUMNS, rows)

    def add_labelled(self, tx: Transaction, rows: Sequence[LabelledRow]) -> None:
        """Rows scored on arrival with labels joined before them (a shadow's answers)."""
        insert_rows(tx.connection, prediction_index, LABELLED_COLUMNS, [
            (*row, orjson.dumps(labelled).decode(),
             None if labels is None else orjson.dumps(labels).decode())
            for *row, labelled, labels in rows])

    def answers(self, tx: Transaction, request_ids: Sequence[str]) -> list[IndexedAnswer]:
        """Every indexed answer to these requests, oldest first."""
        out = []
        for ids in _chunks(request_ids):
            for r in tx.connection.execute(sa.select(prediction_index).where(
                    prediction_index.c.request_id.in_(ids)).order_by(
                    prediction_index.c.ts, prediction_index.c.id)):
                out.append(IndexedAnswer(
                    r.id, r.request_id, r.model, r.version, r.variant, orjson.loads(r.outputs),
                    orjson.loads(r.labeled_rows) if r.labeled_rows else [],
                    orjson.loads(r.labels) if r.labels else {}))
        return out

    def joined_labels(self, tx: Transaction, request_ids: Sequence[str]
                      ) -> dict[tuple[str, str], dict[str, Any]]:
        """(request id, model) -> {row: label} of the labels joined to these requests."""
        known: dict[tuple[str, str], dict[str, Any]] = {}
        for ids in _chunks(request_ids):
            for r in tx.connection.execute(sa.select(
                    prediction_index.c.request_id, prediction_index.c.model,
                    prediction_index.c.labels).where(
                    prediction_index.c.request_id.in_(ids),
                    prediction_index.c.labels.is_not(None))):
                known.setdefault((r.request_id, r.model), {}).update(orjson.loads(r.labels))
        return known

    def mark_labelled(self, tx: Transaction,
                      updates: Sequence[tuple[int, list[int], dict[str, Any]]]) -> None:
        """Per answer id: the rows now labelled and the labels joined to it."""
        if not updates:
            return
        tx.connection.execute(prediction_index.update().where(
            prediction_index.c.id == sa.bindparam("_id")).values(
            labeled_rows=sa.bindparam("_rows"), labels=sa.bindparam("_labels")),
            [{"_id": id_, "_rows": orjson.dumps(rows).decode(),
              "_labels": orjson.dumps(labels).decode()} for id_, rows, labels in updates])

    def expire(self, before: float) -> None:
        """Drop the answers indexed before ``before``."""
        with transaction(self.engine) as tx:
            tx.connection.execute(prediction_index.delete().where(
                prediction_index.c.ts < before))


class PendingLabels:
    """Labels waiting for their prediction (``feedback_pending``)."""

    def hold(self, tx: Transaction, labels: Sequence[tuple[dict[str, Any], float]]) -> None:
        """Each (feedback data, time received)."""
        insert_rows(tx.connection, feedback_pending,
                    ("request_id", "model", "doc", "received"),
                    [(str(data.get("request_id")), str(data.get("model")),
                      orjson.dumps(data).decode(), received) for data, received in labels])

    def held(self, tx: Transaction) -> list[HeldLabel]:
        """Every waiting label, in the order they arrived."""
        return [HeldLabel(r.id, r.model, orjson.loads(r.doc), r.received)
                for r in tx.connection.execute(
                    sa.select(feedback_pending).order_by(feedback_pending.c.id))]

    def release(self, tx: Transaction, ids: Sequence[int]) -> None:
        """Forget these labels (joined, or given up on)."""
        for chunk in _chunks(ids):
            tx.connection.execute(feedback_pending.delete().where(
                feedback_pending.c.id.in_(chunk)))
