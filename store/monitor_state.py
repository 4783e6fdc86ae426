"""The Monitor's own state: per-version statistics, the log checkpoints, and named documents
(label counters, status). Written only by the Monitor, in the transaction of the step that
changed them; read back when it starts and by the admin API."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from store.engine import put_rows
from store.tables import monitor_checkpoints, monitor_state, monitor_stats
from store.transaction import Engine, Transaction, reading, transaction

StatsKey = tuple[str, str, str]  # model, version, variant
STATUS = "status"


def status_name(replica: str | None) -> str:
    """The status document's name: ``status`` on one machine, ``status.<replica id>`` for
    each of several replicas (a long id by its digest: names are 64 characters)."""
    if replica is None:
        return STATUS
    name = f"{STATUS}.{replica}"
    if len(name) > 64:
        name = f"{STATUS}.{hashlib.sha256(replica.encode()).hexdigest()[:32]}"
    return name


@dataclass(frozen=True)
class SavedMonitor:
    """What the Monitor committed last: where each log stream was read to (segment number,
    byte offset), each version's statistics document, the label counters and the status."""

    checkpoints: dict[str, tuple[int, int]]
    stats: dict[StatsKey, dict[str, Any]]
    counters: dict[str, dict[str, int]]
    status: dict[str, Any] | None


@dataclass(frozen=True)
class StoredStats:
    version: str
    variant: str
    doc: dict[str, Any]
    updated_at: float


class MonitorStateStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def load(self, tx: Transaction, replica: str | None = None) -> SavedMonitor:
        """``replica``: whose status (one machine's when None)."""
        conn = tx.connection
        checkpoints = {r.stream: (r.seq, r.offset)
                       for r in conn.execute(sa.select(monitor_checkpoints))}
        stats = {(r.model, r.version, r.variant): orjson.loads(r.doc)
                 for r in conn.execute(sa.select(monitor_stats))}
        named = self._documents(tx, ("counters", status_name(replica)))
        return SavedMonitor(checkpoints, stats, named.get("counters", {}),
                            named.get(status_name(replica)))

    @staticmethod
    def _documents(tx: Transaction, names: tuple[str, ...]) -> dict[str, Any]:
        return {r.name: orjson.loads(r.doc) for r in tx.connection.execute(
            sa.select(monitor_state.c.name, monitor_state.c.doc).where(
                monitor_state.c.name.in_(names)))}

    def put_stats(self, tx: Transaction, docs: Iterable[tuple[StatsKey, dict[str, Any]]],
                  now: float) -> None:
        put_rows(tx.connection, monitor_stats, ("model", "version", "variant"),
                 ("doc", "updated_at"),
                 [(*key, orjson.dumps(doc).decode(), now) for key, doc in docs])

    def put_checkpoints(self, tx: Transaction, positions: Iterable[tuple[str, int, int]],
                        now: float) -> None:
        """Each (stream, segment number, byte offset) given."""
        put_rows(tx.connection, monitor_checkpoints, ("stream",), ("seq", "offset", "updated_at"),
                 [(stream, seq, offset, now) for stream, seq, offset in positions])

    def put_document(self, tx: Transaction, name: str, doc: Any, now: float) -> None:
        """A named document ("counters", "status", "policy")."""
        put_rows(tx.connection, monitor_state, ("name",), ("doc", "updated_at"),
                 [(name, orjson.dumps(doc).decode(), now)])

    def put_counters(self, tx: Transaction, counters: dict[str, dict[str, int]],
                     now: float) -> None:
        """The label counters (model -> outcome -> n), merged into the stored ones by the
        larger of each count. Counts only grow and each model's are counted by one Monitor
        (its partition's owner, when several replicas share the log): the larger is the
        newer, so Monitors that each hold a stale copy of the others' models never undo
        each other's counts."""
        row = tx.connection.execute(sa.select(monitor_state.c.doc).where(
            monitor_state.c.name == "counters").with_for_update()).first()
        merged: dict[str, dict[str, int]] = orjson.loads(row.doc) if row else {}
        for model, outcomes in counters.items():
            into = merged.setdefault(model, {})
            for outcome, n in outcomes.items():
                into[outcome] = max(n, into.get(outcome, 0))
        self.put_document(tx, "counters", merged, now)

    def get_document(self, tx: Transaction, name: str) -> Any:
        """A named document, or None when none was written."""
        row = tx.connection.execute(sa.select(monitor_state.c.doc).where(
            monitor_state.c.name == name)).first()
        return orjson.loads(row.doc) if row else None

    def put_status(self, status: dict[str, Any], now: float, replica: str | None = None
                   ) -> None:
        """The status document in a transaction of its own (written every tick): one
        machine's, or ``replica``'s own (each Monitor of several keeps its own, naming
        itself in it)."""
        doc = status if replica is None else {**status, "replica": replica}
        with transaction(self.engine) as tx:
            self.put_document(tx, status_name(replica), doc, now)

    def drop_statuses(self, replica: str | None = None, before: float | None = None) -> int:
        """Forget replicas' status documents: ``replica``'s (a graceful stop), or every
        replica's last written before ``before`` (one killed, or a pod name a rollout
        retired): ``…/stats`` and ``vigil status`` would otherwise list them for ever.
        One machine's ``status`` is never dropped. Returns how many went."""
        where: list[sa.ColumnElement[bool]] = [monitor_state.c.name.like(STATUS + ".%")]
        if replica is not None:
            where.append(monitor_state.c.name == status_name(replica))
        if before is not None:
            where.append(monitor_state.c.updated_at < before)
        with transaction(self.engine) as tx:
            return int(tx.connection.execute(monitor_state.delete().where(*where)).rowcount)

    @staticmethod
    def statuses(tx: Transaction) -> list[dict[str, Any]]:
        """Every status document: one machine's, and each replica's."""
        return [orjson.loads(r.doc) for r in tx.connection.execute(
            sa.select(monitor_state.c.doc).where(sa.or_(
                monitor_state.c.name == STATUS,
                monitor_state.c.name.like(STATUS + ".%"))).order_by(monitor_state.c.name))]

    def drop_checkpoints(self, streams: Iterable[str]) -> None:
        with transaction(self.engine) as tx:
            tx.connection.execute(monitor_checkpoints.delete().where(
                monitor_checkpoints.c.stream.in_(sorted(streams))))

    def read_model(self, model: str) -> tuple[list[StoredStats], dict[str, Any]]:
        """One model's statistics (by version, then variant), the "counters" document and
        every status document (under "statuses"), in one snapshot."""
        with reading(self.engine) as tx:
            rows = tx.connection.execute(sa.select(monitor_stats).where(
                monitor_stats.c.model == model).order_by(
                monitor_stats.c.version, monitor_stats.c.variant)).all()
            named = self._documents(tx, ("counters",))
            named["statuses"] = self.statuses(tx)
        return ([StoredStats(r.version, r.variant, orjson.loads(r.doc), r.updated_at)
                 for r in rows], named)
