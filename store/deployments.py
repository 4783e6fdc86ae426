"""Deployment state per model, stored: every change is a compare-and-set on the revision
(``UPDATE ... WHERE revision = :expected``), so an operator and the rollout controller never
overwrite each other: the loser gets ``models.errors.StaleRevision``. The deployment itself and
its changes are ``models.deployment``.
"""

from __future__ import annotations

import json
import secrets
import time

import sqlalchemy as sa

from models.deployment import Deployment
from models.errors import DeploymentNotFound, StaleRevision
from store.tables import deployments
from store.transaction import Transaction, transaction


class DeploymentStore:
    """Reads and compare-and-set writes of deployments."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def revisions(self) -> dict[str, int]:
        """Model → revision, cheap enough to poll every half second."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(deployments.c.model, deployments.c.revision))
            return {r.model: r.revision for r in rows}

    def get(self, model: str) -> Deployment:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(deployments).where(deployments.c.model == model)).first()
        if row is None:
            raise DeploymentNotFound(model)
        return Deployment.from_doc(row.model, row.revision, json.loads(row.doc))

    def all(self) -> list[Deployment]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(deployments).order_by(deployments.c.model)).all()
        return [Deployment.from_doc(r.model, r.revision, json.loads(r.doc)) for r in rows]

    def create(self, deployment: Deployment) -> Deployment:
        """Insert a new deployment at revision 1 with a fresh routing salt."""
        salt = deployment.salt or secrets.token_hex(8)
        doc = {**deployment.to_doc(), "salt": salt}
        with self.engine.begin() as conn:
            conn.execute(deployments.insert().values(
                model=deployment.model, revision=1, doc=json.dumps(doc), updated_at=time.time()))
        return Deployment.from_doc(deployment.model, 1, doc)

    def replace(self, new: Deployment, expected_revision: int,
                tx: Transaction | None = None) -> Deployment:
        """Write ``new`` if the stored revision is still ``expected_revision`` (in ``tx``
        when given)."""
        doc = json.dumps(new.to_doc())
        stmt = (deployments.update()
                .where(deployments.c.model == new.model,
                       deployments.c.revision == expected_revision)
                .values(doc=doc, revision=expected_revision + 1, updated_at=time.time()))
        if tx is None:
            with transaction(self.engine) as own:
                return self.replace(new, expected_revision, own)
        conn = tx.connection
        if conn.execute(stmt).rowcount != 1:
            row = conn.execute(sa.select(deployments.c.revision)
                               .where(deployments.c.model == new.model)).first()
            if row is None:
                raise DeploymentNotFound(new.model)
            raise StaleRevision(expected_revision, row.revision)
        return Deployment.from_doc(new.model, expected_revision + 1, json.loads(doc))
