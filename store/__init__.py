"""The store: the whole persistence layer, over SQLAlchemy Core. One repository a table
family; repositories take and return plain values and dataclasses, and write in a
``Transaction`` their caller opens when several writes must commit together.

- ``deployments``: deployment state, compare-and-set on its revision
- ``audit``: the append-only audit log
- ``monitor_state``: the Monitor's statistics, log checkpoints, counters and status
- ``predictions``: the prediction index and the labels waiting for it
- ``drift``: detector state, alarms, adopted references and rebaseline requests
- ``webhooks``: the webhook outbox, its deliveries and every attempt
- ``policy_state``: the retraining policies' state
- ``rollouts``: each model's latest rollout, compare-and-set on its revision
- ``kpis``: business KPI outcomes per request and their sums per (version, variant, KPI)
- ``experiments``: each model's latest experiment, compare-and-set on its revision
- ``cluster``: partition leases (fencing the Monitor's commits), replicas, counted event ids
- ``transaction``: the transaction handle; ``engine``: engines and migrations; ``tables``

A SQLite file in WAL mode is the embedded default; a PostgreSQL URL is the same code.
The schema is managed by Alembic migrations in ``store/migrations``.
"""

from store.audit import AuditLog, AuditRecord
from store.cluster import EventIds, Lease, LeaseLost, LeaseStore, Replica, ReplicaStore
from store.deployments import DeploymentNotFound, DeploymentStore, StaleRevision
from store.drift import DriftStore
from store.engine import UNAVAILABLE, make_engine, migrate
from store.monitor_state import MonitorStateStore
from store.policy_state import PolicyStateStore
from store.predictions import PendingLabels, PredictionIndex
from store.rollouts import RolloutStore, StaleRollout
from store.transaction import Engine, Transaction, reading, transaction
from store.webhooks import Outbox

__all__ = [
    "UNAVAILABLE",
    "AuditLog",
    "AuditRecord",
    "DeploymentNotFound",
    "DeploymentStore",
    "DriftStore",
    "Engine",
    "EventIds",
    "Lease",
    "LeaseLost",
    "LeaseStore",
    "MonitorStateStore",
    "Outbox",
    "PendingLabels",
    "PolicyStateStore",
    "PredictionIndex",
    "Replica",
    "ReplicaStore",
    "RolloutStore",
    "StaleRevision",
    "StaleRollout",
    "Transaction",
    "make_engine",
    "migrate",
    "reading",
    "transaction",
]
