"""What one Gateway worker serves right now: each model's deployment and loaded sessions.

The store is the truth; this is a per-worker cache stamped with each model's revision. A
poll (``store.deployment_poll_seconds``) picks up committed changes; the worker that made a
change refreshes at once. New versions are loaded and smoke-tested on their reference rows
*before* the new revision is swapped in, so a version that fails never takes traffic and the
previous state keeps serving.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass

from models.card import Feature, ModelCard, strictest_pii
from models.deployment import Deployment
from models.errors import DeploymentNotFound, VigilError
from models.registry import Registry
from models.runtime import ModelRuntime
from store.deployments import DeploymentStore

log = logging.getLogger("vigil.live")


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
    def __init__(self, store: DeploymentStore, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        self._served: dict[str, Served] = {}
        self._cache: dict[tuple[str, str], ModelRuntime] = {}
        self._failed: dict[str, int] = {}  # model -> revision that failed to load here
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
            changed = []
            for model, revision in revisions.items():
                current = self._served.get(model)
                if current is not None and current.deployment.revision == revision:
                    continue
                if self._failed.get(model) == revision:
                    continue
                try:
                    served = self.prepare(self.store.get(model))
                except DeploymentNotFound:
                    continue
                except (VigilError, OSError) as exc:
                    self._failed[model] = revision
                    log.error("revision %d of %s failed to load here; still serving revision "
                              "%s: %s", revision, model,
                              current.deployment.revision if current else None, exc)
                    continue
                self._served[model] = served
                changed.append(model)
            for model in set(self._served) - set(revisions):
                del self._served[model]
                changed.append(model)
            self._evict()
            return changed

    def _evict(self) -> None:
        needed = {(s.deployment.model, v) for s in self._served.values()
                  for v in s.deployment.versions()}
        for key in list(self._cache):
            if key not in needed:
                del self._cache[key]
