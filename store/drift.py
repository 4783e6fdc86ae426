"""Drift, stored: each version's detector state, its alarms (open until acknowledged), the
live rows it adopted as its reference, and operators' rebaseline requests.

The Monitor writes state and alarms in its step's transaction and carries out the requests;
operators acknowledge alarms and queue requests through the admin API; the retraining
policies and the rollout controller read the open alarms.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from store.engine import put_rows
from store.tables import drift_alarms, drift_references, drift_requests, drift_state
from store.transaction import Engine, Transaction, reading, transaction

VersionKey = tuple[str, str]  # model, version
NUMPY = orjson.OPT_SERIALIZE_NUMPY  # detector snapshots and adopted rows hold arrays


@dataclass(frozen=True)
class StoredAlarm:
    id: int
    doc: dict[str, Any]  # monitoring.drift.signals.DriftAlarm.to_dict()
    acknowledged_at: float | None
    acknowledged_by: str | None


@dataclass(frozen=True)
class RebaselineRequest:
    id: int
    model: str
    version: str
    rows: int
    requested_by: str
    ts: float
    done_at: float | None = None
    outcome: str | None = None


@dataclass(frozen=True)
class StoredDrift:
    """One version's drift as last committed: its state document (None before its first
    row), the newest alarms and the newest rebaseline requests, newest first."""

    doc: dict[str, Any] | None
    updated_at: float | None
    alarms: list[StoredAlarm]
    requests: list[RebaselineRequest]


def _open(model: str, version: str) -> list[sa.ColumnElement[bool]]:
    return [drift_alarms.c.model == model, drift_alarms.c.version == version,
            drift_alarms.c.acknowledged_at.is_(None)]


class DriftStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ------------------------------------------------------------------ the Monitor

    def load(self, tx: Transaction) -> tuple[dict[VersionKey, dict[str, Any]],
                                              dict[VersionKey, dict[str, Any]]]:
        """(each version's state document, each version's adopted reference)."""
        conn = tx.connection
        states = {(r.model, r.version): orjson.loads(r.doc)
                  for r in conn.execute(sa.select(drift_state))}
        adopted = {(r.model, r.version): orjson.loads(r.doc)
                   for r in conn.execute(sa.select(drift_references))}
        return states, adopted

    def put_state(self, tx: Transaction, model: str, version: str, doc: dict[str, Any],
                  now: float) -> None:
        put_rows(tx.connection, drift_state, ("model", "version"), ("doc", "updated_at"),
                 [(model, version, orjson.dumps(doc, option=NUMPY).decode(), now)])

    def add_alarm(self, tx: Transaction, model: str, version: str, signal: str,
                  doc: dict[str, Any], ts: float) -> None:
        tx.connection.execute(drift_alarms.insert().values(
            model=model, version=version, signal=signal,
            doc=orjson.dumps(doc, option=NUMPY).decode(), ts=ts))

    def open_signals(self, tx: Transaction | None = None) -> set[tuple[str, str, str]]:
        """(model, version, signal) of every open alarm."""
        if tx is None:
            with reading(self.engine) as own:
                return self.open_signals(own)
        rows = tx.connection.execute(sa.select(
            drift_alarms.c.model, drift_alarms.c.version, drift_alarms.c.signal).where(
            drift_alarms.c.acknowledged_at.is_(None))).all()
        return {(r.model, r.version, r.signal) for r in rows}

    def pending_requests(self, tx: Transaction) -> list[RebaselineRequest]:
        """Rebaseline requests not carried out yet, oldest first."""
        return [RebaselineRequest(r.id, r.model, r.version, r.rows, r.requested_by, r.ts)
                for r in tx.connection.execute(sa.select(drift_requests).where(
                    drift_requests.c.done_at.is_(None)).order_by(drift_requests.c.id))]

    def adopt_reference(self, tx: Transaction, model: str, version: str,
                        doc: dict[str, Any], now: float) -> None:
        """The version's reference from now on (live rows, their outputs, the source),
        replacing any adopted before."""
        conn = tx.connection
        conn.execute(drift_references.delete().where(
            drift_references.c.model == model, drift_references.c.version == version))
        conn.execute(drift_references.insert().values(
            model=model, version=version, doc=orjson.dumps(doc, option=NUMPY).decode(),
            created_at=now))

    def close_alarms(self, tx: Transaction, model: str, version: str, by: str,
                     now: float, signal: str | None = None) -> list[int]:
        """Acknowledge the version's open alarms (one signal's, or all); their ids."""
        cond = _open(model, version)
        if signal is not None:
            cond.append(drift_alarms.c.signal == signal)
        conn = tx.connection
        ids = [r.id for r in conn.execute(sa.select(drift_alarms.c.id).where(*cond))]
        if ids:
            conn.execute(drift_alarms.update().where(drift_alarms.c.id.in_(ids)).values(
                acknowledged_at=now, acknowledged_by=by))
        return ids

    def finish_request(self, tx: Transaction, request_id: int, now: float,
                       outcome: str) -> None:
        tx.connection.execute(drift_requests.update().where(
            drift_requests.c.id == request_id).values(done_at=now, outcome=outcome))

    # ------------------------------------------------------------------ readers, operators

    def open_alarms(self, tx: Transaction, model: str, version: str) -> list[dict[str, Any]]:
        """The version's open alarms: each its document with its ``id``."""
        return [{"id": r.id, **orjson.loads(r.doc)} for r in tx.connection.execute(
            sa.select(drift_alarms.c.id, drift_alarms.c.doc).where(*_open(model, version)))]

    def open_signals_of(self, model: str, version: str) -> set[str]:
        """The signals of the version's open alarms."""
        with reading(self.engine) as tx:
            return {r.signal for r in tx.connection.execute(
                sa.select(drift_alarms.c.signal).where(*_open(model, version)))}

    def acknowledge(self, model: str, version: str, actor: str, signal: str | None = None,
                    now: float | None = None) -> list[int]:
        """Close the version's open alarms (one signal's, or all); returns their ids."""
        with transaction(self.engine) as tx:
            return self.close_alarms(tx, model, version, actor, now or time.time(), signal)

    def request_rebaseline(self, model: str, version: str, rows: int, actor: str,
                           now: float | None = None) -> int:
        """Queue a rebaseline for the Monitor; returns the request id."""
        with transaction(self.engine) as tx:
            result = tx.connection.execute(drift_requests.insert().values(
                model=model, version=version, action="rebaseline", rows=rows,
                requested_by=actor, ts=now or time.time()))
            key = result.inserted_primary_key
            assert key is not None  # an INSERT of one row
            return int(key[0])

    def read_version(self, model: str, version: str, alarms_limit: int = 20,
                     requests_limit: int = 5) -> StoredDrift:
        with reading(self.engine) as tx:
            conn = tx.connection
            row = conn.execute(sa.select(drift_state).where(
                drift_state.c.model == model, drift_state.c.version == version)).first()
            alarms = conn.execute(sa.select(drift_alarms).where(
                drift_alarms.c.model == model, drift_alarms.c.version == version).order_by(
                drift_alarms.c.id.desc()).limit(alarms_limit)).all()
            requests = conn.execute(sa.select(drift_requests).where(
                drift_requests.c.model == model, drift_requests.c.version == version).order_by(
                drift_requests.c.id.desc()).limit(requests_limit)).all()
        return StoredDrift(
            orjson.loads(row.doc) if row else None, row.updated_at if row else None,
            [StoredAlarm(r.id, orjson.loads(r.doc), r.acknowledged_at, r.acknowledged_by)
             for r in alarms],
            [RebaselineRequest(r.id, r.model, r.version, r.rows, r.requested_by, r.ts,
                               r.done_at, r.outcome) for r in requests])
