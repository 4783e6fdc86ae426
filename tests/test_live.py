"""service/live.py: a worker that cannot fetch a version keeps serving the deployment it had,
says why in readiness, and tries again on later polls with a growing wait; a version that
fails to load is remembered until the next revision; no deployment at all is ready."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from models.deployment import Canary, Deployment
from models.errors import ArtifactInvalid, ArtifactUnavailable
from models.registry import Registry
from service.live import RETRY_MAX_SECONDS, LiveDeployments
from store import DeploymentStore


class Flaky(Registry):
    """The demo registry, with versions whose fetch fails (or whose load fails) on demand."""

    def __init__(self, inner: Registry) -> None:
        super().__init__()
        self.inner = inner
        self.unfetchable: set[str] = set()
        self.unloadable: set[str] = set()
        self.fetches = 0

    def ensure(self, name: str, version: str) -> None:
        self.fetches += 1
        if version in self.unfetchable:
            raise ArtifactUnavailable(name, version, "model.onnx differs from what was "
                                      "registered")
        if version in self.unloadable:
            raise ArtifactInvalid("model", "not a loadable ONNX")

    def get(self, name: str, version: str) -> Any:
        return self.inner.get(name, version)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def live(engine: sa.Engine, registry: Registry) -> tuple[LiveDeployments, Flaky, Clock]:
    clock = Clock()
    flaky = Flaky(registry)
    return LiveDeployments(DeploymentStore(engine), flaky, retry_seconds=1.0,
                           clock=clock), flaky, clock


def test_no_deployment_at_all_is_ready(live: tuple[LiveDeployments, Flaky, Clock]) -> None:
    lv, _, _ = live
    assert lv.refresh() == [] and lv.unready() == [] and lv.behind() == {}


def test_a_fetch_failure_keeps_the_old_revision_and_is_retried_with_backoff(
        live: tuple[LiveDeployments, Flaky, Clock]) -> None:
    lv, flaky, clock = live
    store = lv.store
    first = store.create(Deployment(model="breast_cancer", champion="v1"))
    assert lv.refresh() == ["breast_cancer"] and lv.unready() == []
    flaky.unfetchable.add("v2")
    second = store.replace(Deployment(model="breast_cancer", champion="v1",
                                      canary=Canary("v2", 0.5)), first.revision)
    assert lv.refresh() == []
    served = lv.get("breast_cancer")
    assert served is not None and served.deployment.revision == first.revision
    [reason] = lv.unready()
    assert reason.startswith(f"breast_cancer: revision {second.revision} is not served here "
                             f"(serving revision {first.revision})")
    assert "version 'v2' of 'breast_cancer' cannot be fetched: model.onnx differs" in reason
    assert lv.behind() == {"breast_cancer": True}
    fetches = flaky.fetches
    waits = []
    for _ in range(7):  # polls between retries fetch nothing; each wait doubles, capped
        waited = 0.0
        while flaky.fetches == fetches:
            clock.now += 0.25
            waited += 0.25
            lv.refresh()
        fetches = flaky.fetches
        waits.append(waited)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, RETRY_MAX_SECONDS, RETRY_MAX_SECONDS]
    flaky.unfetchable.clear()  # the row is good again
    clock.now += RETRY_MAX_SECONDS
    assert lv.refresh() == ["breast_cancer"]
    served = lv.get("breast_cancer")
    assert served is not None and served.deployment.revision == second.revision
    assert lv.unready() == [] and lv.behind() == {"breast_cancer": False}


def test_a_model_never_served_is_not_ready_and_a_load_failure_is_remembered(
        live: tuple[LiveDeployments, Flaky, Clock]) -> None:
    lv, flaky, clock = live
    flaky.unloadable.add("v1")
    first = lv.store.create(Deployment(model="diabetes", champion="v1"))
    lv.refresh()
    [reason] = lv.unready()
    assert reason.startswith(f"diabetes: revision {first.revision} is not served here "
                             "(serving none): invalid model: not a loadable ONNX")
    fetches = flaky.fetches
    clock.now += 1000
    lv.refresh()
    assert flaky.fetches == fetches  # not tried again for this revision
    flaky.unloadable.clear()
    lv.store.replace(Deployment(model="diabetes", champion="v1", routing_key_header="X-Key"),
                     first.revision)
    assert lv.refresh() == ["diabetes"] and lv.unready() == []
