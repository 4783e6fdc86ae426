"""The webhook outbox: events (by their stable ``webhook-id``), one delivery per event and
target, every attempt, and the targets a ``410 Gone`` disabled.

An event and its deliveries are written in the transaction of the decision that fired it
(``add_event``); the dispatcher then reads the due deliveries and records each attempt in a
transaction of its own.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from store.tables import webhook_attempts, webhook_deliveries, webhook_events, webhook_targets
from store.transaction import Engine, Transaction, reading, transaction


@dataclass(frozen=True)
class DueDelivery:
    id: int
    event_id: str
    target: str
    attempts: int  # made so far
    event: dict[str, Any]  # the payload


@dataclass(frozen=True)
class Attempt:
    """One attempt's result and what becomes of the delivery."""

    delivery_id: int
    target: str
    attempt: int  # its number, from 1
    ts: float
    status_code: int | None
    error: str | None
    duration_seconds: float
    status: str  # the delivery's new status: pending | delivered | dead
    next_attempt_at: float | None
    gone: bool = False  # the target answered 410 Gone: disable it


def add_event(tx: Transaction, event_id: str, event: dict[str, Any], targets: Sequence[str],
              now: float, model: str | None = None, reason: str | None = None) -> bool:
    """Write an event and one pending delivery per target named, in ``tx``. An event id
    already in the outbox is not written again (False): that is the deduplication."""
    conn = tx.connection
    if conn.execute(sa.select(webhook_events.c.event_id).where(
            webhook_events.c.event_id == event_id)).first():
        return False
    conn.execute(webhook_events.insert().values(
        event_id=event_id, type=event["type"], model=model, reason=reason,
        payload=orjson.dumps(event).decode(), created_at=now))
    for name in targets:
        conn.execute(webhook_deliveries.insert().values(
            event_id=event_id, target=name, status="pending", attempts=0,
            next_attempt_at=now, created_at=now, updated_at=now))
    return True


class Outbox:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def due(self, now: float, limit: int = 50) -> tuple[list[DueDelivery], set[str]]:
        """Pending deliveries whose time has come, soonest first, and the disabled targets."""
        with reading(self.engine) as tx:
            conn = tx.connection
            rows = conn.execute(sa.select(webhook_deliveries, webhook_events.c.payload).join(
                webhook_events, webhook_events.c.event_id == webhook_deliveries.c.event_id
            ).where(webhook_deliveries.c.status == "pending",
                    webhook_deliveries.c.next_attempt_at <= now).order_by(
                webhook_deliveries.c.next_attempt_at).limit(limit)).all()
            disabled = {r.name for r in conn.execute(sa.select(webhook_targets.c.name).where(
                webhook_targets.c.disabled_at.is_not(None)))}
        return ([DueDelivery(r.id, r.event_id, r.target, r.attempts, orjson.loads(r.payload))
                 for r in rows], disabled)

    def claim(self, now: float, hold_seconds: float, limit: int = 50
              ) -> tuple[list[DueDelivery], set[str]]:
        """``due``, for several dispatchers on one outbox (several replicas): the deliveries
        returned are claimed, their next attempt moved ``hold_seconds`` on in the same
        transaction, so no other dispatcher sends the same attempt meanwhile. On PostgreSQL
        the rows are locked with ``FOR UPDATE SKIP LOCKED`` (a concurrent claimer takes
        other rows); elsewhere each claim is a compare-and-set on ``next_attempt_at``. A
        dispatcher that dies while sending leaves the claim to lapse: the attempt is made
        again after ``hold_seconds``, with the same ``webhook-id``."""
        with transaction(self.engine) as tx:
            conn = tx.connection
            query = sa.select(webhook_deliveries, webhook_events.c.payload).join(
                webhook_events, webhook_events.c.event_id == webhook_deliveries.c.event_id
            ).where(webhook_deliveries.c.status == "pending",
                    webhook_deliveries.c.next_attempt_at <= now).order_by(
                webhook_deliveries.c.next_attempt_at).limit(limit)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True, of=webhook_deliveries)
            claimed = []
            for r in conn.execute(query).all():
                if conn.execute(webhook_deliveries.update().where(
                        webhook_deliveries.c.id == r.id,
                        webhook_deliveries.c.next_attempt_at == r.next_attempt_at).values(
                        next_attempt_at=now + hold_seconds)).rowcount:
                    claimed.append(DueDelivery(r.id, r.event_id, r.target, r.attempts,
                                               orjson.loads(r.payload)))
            disabled = {r.name for r in conn.execute(sa.select(webhook_targets.c.name).where(
                webhook_targets.c.disabled_at.is_not(None)))}
        return claimed, disabled

    def record(self, a: Attempt) -> None:
        """An attempt, the delivery's new state and, on a 410, the target disabled: together."""
        with transaction(self.engine) as tx:
            conn = tx.connection
            conn.execute(webhook_attempts.insert().values(
                delivery_id=a.delivery_id, attempt=a.attempt, ts=a.ts,
                status_code=a.status_code, error=a.error, duration_seconds=a.duration_seconds))
            conn.execute(webhook_deliveries.update().where(
                webhook_deliveries.c.id == a.delivery_id).values(
                status=a.status, attempts=a.attempt, next_attempt_at=a.next_attempt_at,
                last_status=a.status_code, last_error=a.error, updated_at=a.ts))
            if a.gone:
                if not conn.execute(webhook_targets.update().where(
                        webhook_targets.c.name == a.target).values(
                        disabled_at=a.ts, reason="410 Gone")).rowcount:
                    conn.execute(webhook_targets.insert().values(
                        name=a.target, disabled_at=a.ts, reason="410 Gone"))

    def redeliver(self, delivery_id: int, now: float | None = None) -> bool:
        """Put a delivery (a dead letter, typically) back in the queue for a new round."""
        with transaction(self.engine) as tx:
            return bool(tx.connection.execute(webhook_deliveries.update().where(
                webhook_deliveries.c.id == delivery_id).values(
                status="pending", attempts=0, next_attempt_at=now or time.time(),
                updated_at=now or time.time())).rowcount)

    def deliveries(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest deliveries (of one status; "failed": pending after a failed attempt),
        each with its event's type, model and reason and its attempts."""
        stmt = sa.select(webhook_deliveries, webhook_events.c.type, webhook_events.c.model,
                         webhook_events.c.reason).join(
            webhook_events, webhook_events.c.event_id == webhook_deliveries.c.event_id
        ).order_by(webhook_deliveries.c.id.desc()).limit(limit)
        if status == "failed":
            stmt = stmt.where(webhook_deliveries.c.status == "pending",
                              webhook_deliveries.c.attempts > 0)
        elif status is not None:
            stmt = stmt.where(webhook_deliveries.c.status == status)
        with reading(self.engine) as tx:
            conn = tx.connection
            rows = conn.execute(stmt).all()
            attempts: dict[int, list[dict[str, Any]]] = {}
            ids = [r.id for r in rows]
            if ids:
                for a in conn.execute(sa.select(webhook_attempts).where(
                        webhook_attempts.c.delivery_id.in_(ids)).order_by(
                        webhook_attempts.c.id)):
                    attempts.setdefault(a.delivery_id, []).append(
                        {"attempt": a.attempt, "ts": a.ts, "status_code": a.status_code,
                         "error": a.error, "duration_seconds": round(a.duration_seconds, 4)})
        return [{"id": r.id, "event_id": r.event_id, "target": r.target, "status": r.status,
                 "type": r.type, "model": r.model, "reason": r.reason, "attempts": r.attempts,
                 "next_attempt_at": r.next_attempt_at if r.status == "pending" else None,
                 "last_status": r.last_status, "last_error": r.last_error,
                 "created_at": r.created_at, "updated_at": r.updated_at,
                 "history": attempts.get(r.id, [])} for r in rows]

    def counts(self) -> dict[tuple[str, str], int]:
        """(target, status) -> deliveries; for the pending and dead-letter gauges."""
        with reading(self.engine) as tx:
            rows = tx.connection.execute(sa.select(
                webhook_deliveries.c.target, webhook_deliveries.c.status,
                sa.func.count().label("n")
            ).group_by(webhook_deliveries.c.target, webhook_deliveries.c.status)).all()
        return {(r.target, r.status): int(r.n) for r in rows}
