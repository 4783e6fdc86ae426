"""A shadow never changes the answer or delays it; a failing shadow trips its breaker."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from models.registry import Registry
from monitoring.events import InMemoryStatsSink, PredictionEvent
from service.inference import Predictor
from service.live import LiveDeployments, Served
from service.settings import load_settings
from service.shadows import CircuitBreaker, ShadowJob, ShadowPool
from store import Deployment, Shadow


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_half_opens() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=3, reset_seconds=10, clock=clock)
    for _ in range(2):
        b.record(False)
    assert b.state == "closed" and b.allow()
    b.record(False)
    assert b.state == "open" and not b.allow()
    clock.now = 10.0
    assert b.state == "half_open"
    assert b.allow() and not b.allow()  # exactly one trial call
    b.record(False)
    assert b.state == "open"
    clock.now = 20.0
    assert b.allow()
    b.record(True)
    assert b.state == "closed"


class SlowRuntime:
    def __init__(self, inner: Any, delay: float) -> None:
        self.card, self.inner, self.delay = inner.card, inner, delay
        self.release = threading.Event()
        self.finished = 0

    def predict(self, matrix: np.ndarray) -> list[dict[str, Any]]:
        self.release.wait(self.delay)
        self.finished += 1
        return self.inner.predict(matrix)


class BrokenRuntime:
    def __init__(self, inner: Any) -> None:
        self.card = inner.card

    def predict(self, matrix: np.ndarray) -> list[dict[str, Any]]:
        raise RuntimeError("shadow exploded")


class FixedLive(LiveDeployments):
    def __init__(self, served: Served) -> None:
        self._fixed = served

    def get(self, model: str) -> Served | None:
        return self._fixed if model == self._fixed.deployment.model else None


def _predictor(registry: Registry, shadow_runtime: Any, sink: InMemoryStatsSink,
               timeout: float = 0.2) -> tuple[Predictor, ShadowPool]:
    champion = registry.get("breast_cancer", "v1").load()
    d = Deployment(model="breast_cancer", champion="v1", shadows=(Shadow("v3"),), salt="s",
                   revision=7)
    served = Served(d, {"v1": champion, "v3": shadow_runtime})
    pool = ShadowPool(queue_size=4, timeout=timeout, breaker_failures=3,
                      breaker_reset_seconds=60, sink=sink)
    settings = load_settings()
    return Predictor(settings, FixedLive(served), sink, pool), pool


@pytest.mark.parametrize("kind", ["healthy", "slow", "broken"])
def test_a_shadow_never_changes_the_answer(registry: Registry, kind: str) -> None:
    async def scenario() -> None:
        sink = InMemoryStatsSink()
        v3 = registry.get("breast_cancer", "v3").load()
        runtime = {"healthy": v3, "slow": SlowRuntime(v3, 5.0),
                   "broken": BrokenRuntime(v3)}[kind]
        predictor, pool = _predictor(registry, runtime, sink)
        alone = registry.get("breast_cancer", "v1").load()
        rows = registry.get("breast_cancer", "v1").smoke_rows()[:3]
        names = alone.card.feature_names
        body = {"model": "breast_cancer",
                "inputs": [dict(zip(names, r.tolist(), strict=True)) for r in rows]}
        results = []
        for _ in range(8):
            results.append(await predictor.predict(body, {}))
            await asyncio.sleep(0.02)  # requests arrive apart, as on a real server
        for r in results:
            assert r.body["predictions"] == alone.predict(rows)
            assert (r.body["version"], r.body["variant"]) == ("v1", "champion")
        if isinstance(runtime, SlowRuntime):
            # every answer came back while the shadow had not finished a single prediction
            assert runtime.finished == 0
        await asyncio.sleep(1.0)
        stats = sink.snapshot()["breast_cancer"]
        assert stats["v1"]["requests"] == 8
        if kind == "healthy":
            assert stats["v3"]["requests"] == 8 and stats["v3"]["errors"] == 0
            assert stats["v3"]["agreement"] is not None
        else:
            # timeouts/errors were recorded and the breaker opened after 3 of them
            assert stats["v3"]["errors"] >= 3
            assert pool.breaker_states()[("breast_cancer", "v3")] == "open"
        if isinstance(runtime, SlowRuntime):
            runtime.release.set()
        pool.close()

    asyncio.run(scenario())


def test_a_full_shadow_queue_drops_instead_of_waiting(registry: Registry) -> None:
    async def scenario() -> None:
        events: list[PredictionEvent] = []

        class ListSink:
            def emit(self, e: PredictionEvent) -> None:
                events.append(e)

        v3 = registry.get("breast_cancer", "v3").load()
        slow = SlowRuntime(v3, 5.0)
        predictor, pool = _predictor(registry, slow, ListSink(), timeout=10)  # type: ignore[arg-type]
        names = v3.card.feature_names
        row = registry.get("breast_cancer", "v1").smoke_rows()[0].tolist()
        body = {"model": "breast_cancer", "inputs": [dict(zip(names, row, strict=True))]}
        for _ in range(10):
            r = await predictor.predict(body, {})
            assert r.body["variant"] == "champion"
        lane = pool.lane("breast_cancer", "v3")
        assert lane.queued() == 4  # bounded: the rest were dropped, not queued
        slow.release.set()
        pool.close()

    asyncio.run(scenario())


class PickyRuntime:
    """A shadow that answers like v3 but fails on any matrix holding a negative value."""

    def __init__(self, inner: Any) -> None:
        self.card, self.inner = inner.card, inner
        self.calls: list[int] = []

    def predict(self, matrix: np.ndarray) -> list[dict[str, Any]]:
        self.calls.append(len(matrix))
        if (matrix < 0).any():
            raise ValueError("negative input")
        return self.inner.predict(matrix)


def test_a_busy_loop_gets_every_shadow_answered_in_batches_each_with_its_own_rows(
        registry: Registry) -> None:
    """The lane's thread batches what queued while the loop was busy, and splits the answers
    back per request: each shadow event carries the outputs of its own rows. A request whose
    rows make the batch fail fails alone."""
    async def scenario() -> None:
        events: list[PredictionEvent] = []
        done = threading.Event()

        class ListSink:
            def emit(self, e: PredictionEvent) -> None:
                events.append(e)
                if len(events) == 120:
                    done.set()

        v3 = registry.get("breast_cancer", "v3").load()
        picky = PickyRuntime(v3)
        pool = ShadowPool(queue_size=256, timeout=5, breaker_failures=100,
                          breaker_reset_seconds=60, sink=ListSink())  # type: ignore[arg-type]
        rng = np.random.default_rng(7)
        base = registry.get("breast_cancer", "v1").smoke_rows()
        v1 = registry.get("breast_cancer", "v1").load()
        jobs = []
        for i in range(120):
            n = int(rng.integers(1, 6))
            matrix = base[rng.integers(0, len(base), n)].copy()
            if i == 57:
                matrix[0, 0] = -1.0  # this request's rows break a batch
            jobs.append(ShadowJob(f"r{i}", "breast_cancer", "v3", picky, matrix, "v1",
                                  v1.predict(matrix)))
        for job in jobs:  # offered back to back: the loop never yields in between
            assert pool.submit(job) is None
        await asyncio.to_thread(done.wait, 30)
        pool.close()
        assert len(events) == 120
        by_id = {e.request_id: e for e in events}
        for job in jobs:
            e = by_id[job.request_id]
            if job.request_id == "r57":
                assert e.status == "error" and "negative input" in (e.error or "")
                continue
            assert e.status == "ok" and e.variant == "shadow" and e.rows == len(job.matrix)
            assert e.outputs == v3.predict(job.matrix)
        assert max(picky.calls) > 5  # batched: more rows than any one request has

    asyncio.run(scenario())


def test_a_lingering_lane_runs_requests_apart_as_one_call_and_counts_each(
        registry: Registry) -> None:
    """With ``linger``, jobs offered a few milliseconds apart (requests arriving one by one)
    are answered by one call of the shadow, and the metrics count every request, row and
    agreement; without it each request is its own call."""
    from prometheus_client import CollectorRegistry

    from monitoring.metrics import GatewayMetrics

    def run(linger: float) -> tuple[list[int], list[PredictionEvent], Any]:
        async def scenario() -> tuple[list[int], list[PredictionEvent], Any]:
            events: list[PredictionEvent] = []

            class ListSink:
                def emit(self, e: PredictionEvent) -> None:
                    events.append(e)

            v1 = registry.get("breast_cancer", "v1").load()
            counting = PickyRuntime(registry.get("breast_cancer", "v3").load())
            metrics = GatewayMetrics(CollectorRegistry())
            pool = ShadowPool(queue_size=64, timeout=5, breaker_failures=100,
                              breaker_reset_seconds=60, sink=ListSink(),  # type: ignore[arg-type]
                              metrics=metrics, linger=linger)
            rows = registry.get("breast_cancer", "v1").smoke_rows()
            for i in range(8):
                matrix = rows[i:i + 1 + i % 2]
                assert pool.submit(ShadowJob(f"r{i}", "breast_cancer", "v3", counting, matrix,
                                             "v1", v1.predict(matrix))) is None
                await asyncio.sleep(0.003)  # requests arrive apart
            for _ in range(200):
                if len(events) == 8:
                    break
                await asyncio.sleep(0.01)
            pool.close()
            return counting.calls, events, metrics
        return asyncio.run(scenario())

    calls, events, metrics = run(linger=0.2)
    assert calls == [12] and sorted(e.request_id for e in events) == [f"r{i}" for i in range(8)]
    assert all(e.status == "ok" and e.rows == 1 + int(e.request_id[1:]) % 2 for e in events)
    sample = metrics.shadow_requests.labels("breast_cancer", "v3", "ok")._value.get()
    rows = metrics.shadow_rows.labels("breast_cancer", "v3")._value.get()
    agreed = metrics.shadow_agreement.labels("breast_cancer", "v3")._value.get()
    expected = sum(round(e.agreement * e.rows) for e in events)  # type: ignore[operator]
    assert (sample, rows, agreed) == (8, 12, expected)
    calls, events, _ = run(linger=0.0)  # each as it comes (two may meet on a loaded box)
    assert len(calls) > 1 and sum(calls) == 12 and len(events) == 8
