"""The append-only audit log: every mutation and every denied attempt, never a token."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from store.tables import audit_log
from store.transaction import Transaction, transaction


@dataclass(frozen=True)
class AuditRecord:
    actor: str  # a token's name, or system:rollout / system:policy; "anonymous" when none
    role: str | None
    action: str
    target: str
    outcome: str  # ok | denied | rejected | failed
    before: Any = None
    after: Any = None
    request_id: str | None = None
    detail: str | None = None
    ts: float = 0.0
    id: int | None = None

    def to_public(self) -> dict[str, Any]:
        data = asdict(self)
        data["time"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.ts)) + \
            f".{int(self.ts * 1000) % 1000:03d}Z"
        return data


class AuditLog:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def write(self, record: AuditRecord, tx: Transaction | None = None) -> None:
        """One row, in ``tx`` when given (it commits with the change it records)."""
        values = {
            "ts": record.ts or time.time(), "actor": record.actor, "role": record.role,
            "action": record.action, "target": record.target, "outcome": record.outcome,
            "before": None if record.before is None else json.dumps(record.before),
            "after": None if record.after is None else json.dumps(record.after),
            "request_id": record.request_id, "detail": record.detail,
        }
        if tx is not None:
            tx.connection.execute(audit_log.insert().values(**values))
            return
        with transaction(self.engine) as own:
            own.connection.execute(audit_log.insert().values(**values))

    def recent(self, limit: int = 100, action: str | None = None) -> list[AuditRecord]:
        """The newest ``limit`` rows, newest first."""
        stmt = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if action:
            stmt = stmt.where(audit_log.c.action == action)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [AuditRecord(
            id=r.id, ts=r.ts, actor=r.actor, role=r.role, action=r.action, target=r.target,
            outcome=r.outcome, before=None if r.before is None else json.loads(r.before),
            after=None if r.after is None else json.loads(r.after), request_id=r.request_id,
            detail=r.detail) for r in rows]
