"""The store: deployment state, the audit log and (later) Monitor state, over SQLAlchemy Core.

A SQLite file in WAL mode is the embedded default; a PostgreSQL URL is the same code.
The schema is managed by Alembic migrations in ``store/migrations``.
"""

from store.audit import AuditLog, AuditRecord
from store.deployments import DeploymentNotFound, DeploymentStore, StaleRevision
from store.engine import make_engine, migrate

__all__ = [
    "AuditLog",
    "AuditRecord",
    "DeploymentNotFound",
    "DeploymentStore",
    "StaleRevision",
    "make_engine",
    "migrate",
]
