"""Change a deployment: the one path every entry point takes (PATCH, promote, rollback,
rollout start, the rollout controller, an experiment's start and auto-promotion).

    plan_change     validate the edit on the stored deployment, check each version it adds
                    against the champion, load and smoke-test what it names
    commit_change   compare-and-set on the revision, then the audit row, in one transaction
                    (the caller's, when it has one to share)
    change_deployment   both, for callers with nothing else to write

Nothing of a new revision is written unless every step before it passed, so a broken version
never takes traffic. Errors are the domain's: ``DeploymentNotFound``, ``DeploymentInvalid``,
``StateConflict`` (nothing to promote or roll back), ``IncompatibleVersion``, an
``ArtifactInvalid`` from loading, ``StaleRevision``; the HTTP edge decides their statuses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from models.card import ModelCard
from models.deployment import Deployment
from models.errors import IncompatibleVersion, StaleRevision, VigilError
from store.audit import AuditLog, AuditRecord
from store.deployments import DeploymentStore
from store.transaction import Transaction, transaction

Edit = Callable[[Deployment], Deployment]
CardOf = Callable[[str, str], ModelCard]  # (model, version) -> its card; NotFound if none


class Loader(Protocol):
    """Loads and smoke-tests every version a deployment names (a Gateway worker's
    ``LiveDeployments``); raises ``ArtifactInvalid`` when one fails."""

    def prepare(self, deployment: Deployment) -> Any: ...


@dataclass(frozen=True)
class Actor:
    """Who changes the deployment, as the audit log names them."""

    name: str
    role: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Change:
    """A checked change, not yet committed: ``after`` carries ``before``'s revision."""

    before: Deployment
    after: Deployment


def field_of(d: Deployment, version: str) -> str:
    """Where ``d`` names ``version``, for an error about it."""
    if d.canary is not None and d.canary.version == version:
        return "canary.version"
    for i, s in enumerate(d.shadows):
        if s.version == version:
            return f"shadows[{i}].version"
    return "champion.version"


def plan_change(store: DeploymentStore, model: str, edit: Edit, *,
                expected: int | None = None, current: Deployment | None = None,
                cards: CardOf | None = None, loader: Loader | None = None,
                field_of: Callable[[Deployment, str], str] = field_of) -> Change:
    """Validate ``edit`` and prepare what it needs, writing nothing.

    ``current`` is the deployment the caller decided on (else it is read); ``expected`` a
    revision the caller requires (If-Match). An edit wrong for any revision fails first, then
    a stale ``expected``, then each version the change adds (``cards``), then loading
    (``loader``). Without ``cards`` and ``loader`` (the Monitor, which serves nothing) only
    the edit and the revision are checked."""
    if current is None:
        current = store.get(model)
    new = edit(current)
    if expected is not None and expected != current.revision:
        raise StaleRevision(expected, current.revision)
    added = sorted(new.versions() - current.versions())
    if cards is not None and added:
        champion = cards(model, new.champion)
        for version in added:
            where = field_of(new, version)
            try:
                card = cards(model, version)
            except VigilError as exc:  # not registered, or its card cannot be read
                raise IncompatibleVersion(where, exc.message) from None
            why = champion.incompatibility(card)
            if why:
                raise IncompatibleVersion(where, why)
    if loader is not None:
        loader.prepare(new)  # load + smoke-test before commit
    return Change(current, new)


def commit_change(store: DeploymentStore, audit: AuditLog, change: Change, by: Actor,
                  action: str, *, detail: str | None = None,
                  tx: Transaction | None = None) -> Deployment:
    """Compare-and-set ``change`` on the revision it was planned on and write its audit row,
    inside ``tx`` when given, else a transaction of its own. ``StaleRevision`` when the
    deployment moved since."""
    if tx is None:
        with transaction(store.engine) as own:
            return commit_change(store, audit, change, by, action, detail=detail, tx=own)
    committed = store.replace(change.after, change.before.revision, tx)
    audit.write(AuditRecord(
        actor=by.name, role=by.role, action=action, target=f"deployments/{committed.model}",
        outcome="ok", before=change.before.to_public(), after=committed.to_public(),
        request_id=by.request_id, detail=detail), tx)
    return committed


def change_deployment(store: DeploymentStore, audit: AuditLog, model: str, edit: Edit,
                      by: Actor, action: str, *, expected: int | None = None,
                      current: Deployment | None = None, cards: CardOf | None = None,
                      loader: Loader | None = None, detail: str | None = None,
                      tx: Transaction | None = None) -> Change:
    """Validate → load and smoke-test → compare-and-set → audit. Returns the deployment
    before and as committed."""
    change = plan_change(store, model, edit, expected=expected, current=current,
                         cards=cards, loader=loader)
    committed = commit_change(store, audit, change, by, action, detail=detail, tx=tx)
    return Change(change.before, committed)
