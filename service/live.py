"""What one Gateway worker serves right now: each model's deployment and loaded sessions.

The store is the truth; this is a per-worker cache stamped with each model's revision. A
poll (``store.deployment_poll_seconds``) picks up committed changes; the worker that made a
change refreshes at once. New versions are loaded and smoke-tested on their reference rows
*before* the new revision is swapped in, so a version that fails never takes traffic and the
previous state keeps serving.

A version missing from this replica's model store is first pulled from the shared store
(``Registry.ensure``; ``service.artifacts``). A pull that fails (``ArtifactUnavailable``: no
shared copy, a digest mismatch, the store down) is tried again on later polls, waiting twice
as long after each failure up to ``RETRY_MAX_SECONDS``; a version that fails to load or its
smoke test is remembered until the deployment's next revision. Either way the model stays
``behind``, which readiness reports (``unready``).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from models.card import Feature, ModelCard, strictest_pii
from models.deployment import Deployment
from models.errors import ArtifactUnavailable, DeploymentNotFound, VigilError
from models.registry import Registry
from models.runtime import ModelRuntime
from store.deployments import DeploymentStore

log = logging.getLogger("vigil.live")
RETRY_MAX_SECONDS = 30.0


@dataclass(frozen=True)
class Behind:
    """A stored revision this worker does not serve, and why. ``retry_at`` (monotonic) is
    when a failed pull is tried again; None for a load failure, kept until a new revision."""

    revision: int
    reason: str
    failures: int = 1
    retry_at: float | None = None


@dataclass(frozen=True)
class Served:
    """One model as this worker serves it: immutable, swapped as a whole."""

    deployment: Deployment
    runtimes: dict[str, ModelRuntime]

    @property
    def card(self) -> ModelCard:
        return self.runtimes[self.deployment.champion].card

    @functools.cached_property
    def log_features(self) -> tuple[Feature, ...]:
        """The champion's features with the strictest personal-data mark of any version
        served (``models.card.strictest_pii``): how the log writes this model's requests."""
        others = [r.card for v, r in self.runtimes.items() if v != self.deployment.champion]
        return strictest_pii([self.card, *others])


class LiveDeployments:
    def __init__(self, store: DeploymentStore, registry: Registry, retry_seconds: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.registry = registry
        self.retry_seconds = retry_seconds  # the first wait after a failed pull
        self.clock = clock
        self._served: dict[str, Served] = {}
        self._cache: dict[tuple[str, str], ModelRuntime] = {}
        self._behind: dict[str, Behind] = {}
        self._revisions: dict[str, int] = {}  # as the last refresh read them
        self._lock = threading.Lock()

    def get(self, model: str) -> Served | None:
        return self._served.get(model)

    def models(self) -> dict[str, Served]:
        return dict(self._served)

    def runtime(self, model: str, version: str) -> ModelRuntime:
        """A loaded, smoke-tested session for a version (cached: versions are immutable)."""
        key = (model, version)
        runtime = self._cache.get(key)
        if runtime is None:
            self.registry.ensure(model, version)
            runtime = self.registry.get(model, version).load()
            self._cache[key] = runtime
        return runtime

    def prepare(self, deployment: Deployment) -> Served:
        """Load every version ``deployment`` names; raises e.g. ``ArtifactInvalid`` if one fails."""
        runtimes = {v: self.runtime(deployment.model, v) for v in sorted(deployment.versions())}
        return Served(deployment, runtimes)

    def refresh(self) -> list[str]:
        """Swap in every model whose stored revision moved; returns the models that changed."""
        with self._lock:
            revisions = self.store.revisions()
            self._revisions = revisions
            changed = []
            for model, revision in revisions.items():
                current = self._served.get(model)
                if current is not None and current.deployment.revision == revision:
                    self._behind.pop(model, None)
                    continue
                if self._waiting(model, revision):
                    continue
                try:
                    served = self.prepare(self.store.get(model))
                except DeploymentNotFound:
                    continue
                except (VigilError, OSError) as exc:
                    self._fell_behind(model, revision, exc)
                    continue
                self._served[model] = served
                self._behind.pop(model, None)
                changed.append(model)
            for model in set(self._served) - set(revisions):
                del self._served[model]
                changed.append(model)
            for model in set(self._behind) - set(revisions):
                del self._behind[model]
            self._evict()
            return changed

    def _waiting(self, model: str, revision: int) -> bool:
        """Whether ``revision`` already failed here and is not to be tried again yet."""
        behind = self._behind.get(model)
        if behind is None or behind.revision != revision:
            return False
        return behind.retry_at is None or self.clock() < behind.retry_at

    def _fell_behind(self, model: str, revision: int, exc: Exception) -> None:
        before = self._behind.get(model)
        failures = before.failures + 1 if before and before.revision == revision else 1
        retry_at = None
        if isinstance(exc, ArtifactUnavailable):
            retry_at = self.clock() + min(RETRY_MAX_SECONDS,
                                          self.retry_seconds * 2 ** (failures - 1))
        reason = exc.message if isinstance(exc, VigilError) else str(exc)
        self._behind[model] = Behind(revision, reason, failures, retry_at)
        current = self._served.get(model)
        log.error("revision %d of %s failed to load here%s; still serving revision %s: %s",
                  revision, model, " (tried again later)" if retry_at else "",
                  current.deployment.revision if current else None, reason)

    def unready(self) -> list[str]:
        """Why this worker does not serve everything its deployments name: one sentence a
        model, naming the version and why; empty when it does (and when there is no
        deployment at all)."""
        reasons = []
        for model, revision in sorted(self._revisions.items()):
            behind = self._behind.get(model)
            served = self._served.get(model)
            now = f"serving revision {served.deployment.revision}" if served else "serving none"
            if behind is not None:
                reasons.append(f"{model}: revision {behind.revision} is not served here "
                               f"({now}): {behind.reason}")
            elif served is None:
                reasons.append(f"{model}: revision {revision} is not loaded yet")
        return reasons

    def behind(self) -> dict[str, bool]:
        """Per model of the last refresh: whether this worker serves another revision than
        the stored one (or none)."""
        return {model: (served := self._served.get(model)) is None
                or served.deployment.revision != revision
                for model, revision in self._revisions.items()}

    def _evict(self) -> None:
        needed = {(s.deployment.model, v) for s in self._served.values()
                  for v in s.deployment.versions()}
        for key in list(self._cache):
            if key not in needed:
                del self._cache[key]
