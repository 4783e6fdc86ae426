"""Shadow traffic: each shadow version behind its own bounded queue, thread, timeout and
circuit breaker, entirely off the response path. A shadow's answer is compared with the
primary's and emitted as an event, never returned."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from monitoring.events import EventSink, PredictionEvent, agreement
from monitoring.metrics import GatewayMetrics

log = logging.getLogger("vigil.shadows")


class Predicts(Protocol):
    def predict(self, matrix: np.ndarray) -> list[dict[str, Any]]: ...


class CircuitBreaker:
    """Closed → open after ``failures`` consecutive failures; after ``reset_seconds`` one
    trial call is let through (half-open): success closes it, failure opens it again."""

    def __init__(self, failures: int, reset_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._clock() - self._opened_at >= self.reset_seconds else "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial:
            self._trial = True
            return True
        return False

    def record(self, ok: bool) -> None:
        self._trial = False
        if ok:
            self._consecutive = 0
            self._opened_at = None
            return
        self._consecutive += 1
        if self._opened_at is not None or self._consecutive >= self.failures:
            self._opened_at = self._clock()


@dataclass
class ShadowJob:
    request_id: str
    model: str
    version: str
    runtime: Predicts
    matrix: np.ndarray
    primary_version: str
    primary_outputs: list[dict[str, Any]]
    features: Any = None  # the card's features, to name the inputs in the log


class ShadowLane:
    """One shadow version's queue, thread and breaker."""

    def __init__(self, model: str, version: str, *, queue_size: int, timeout: float,
                 breaker: CircuitBreaker, sink: EventSink, metrics: GatewayMetrics | None) -> None:
        self.model, self.version = model, version
        self.timeout = timeout
        self.breaker = breaker
        self._sink = sink
        self._metrics = metrics
        self._queue: asyncio.Queue[ShadowJob] = asyncio.Queue(maxsize=queue_size)
        # One thread per lane: a hung shadow blocks only its own lane.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"shadow-{version}")
        self._task = asyncio.get_running_loop().create_task(self._run())

    def offer(self, job: ShadowJob) -> str | None:
        """Queue a job without waiting; the reason it was refused, if it was."""
        if not self.breaker.allow():
            return "breaker_open"
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            return "dropped"
        return None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = await self._queue.get()
            start = time.perf_counter()
            status, outputs, error = "ok", None, None
            try:
                outputs = await asyncio.wait_for(
                    loop.run_in_executor(self._executor, job.runtime.predict, job.matrix),
                    self.timeout)
            except TimeoutError:
                status, error = "timeout", f"no answer within {self.timeout}s"
            except Exception as exc:  # a broken shadow must never take the lane down
                status, error = "error", f"{type(exc).__name__}: {exc}"[:500]
            self.breaker.record(status == "ok")
            self._record(job, status, outputs, error, time.perf_counter() - start)

    def _record(self, job: ShadowJob, status: str, outputs: list[dict[str, Any]] | None,
                error: str | None, latency: float) -> None:
        agree = agreement(job.primary_outputs, outputs) if outputs is not None else None
        if self._metrics is not None:
            self._metrics.shadow_requests.labels(job.model, job.version, status).inc()
            if agree is not None:
                rows = len(job.primary_outputs)
                self._metrics.shadow_rows.labels(job.model, job.version).inc(rows)
                self._metrics.shadow_agreement.labels(job.model, job.version).inc(
                    round(agree * rows))
        try:
            self._sink.emit(PredictionEvent(
                request_id=job.request_id, model=job.model, version=job.version,
                variant="shadow", time=time.time(), rows=len(job.matrix),
                latency_seconds=latency, status=status, inputs=job.matrix,
                features=job.features, outputs=outputs,
                error=error, primary_version=job.primary_version, agreement=agree))
        except Exception:
            log.exception("shadow event sink failed")

    def close(self) -> None:
        self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


class ShadowPool:
    """Lanes by (model, version), created on first use inside the worker's event loop."""

    def __init__(self, *, queue_size: int, timeout: float, breaker_failures: int,
                 breaker_reset_seconds: float, sink: EventSink,
                 metrics: GatewayMetrics | None = None) -> None:
        self._kw = {"queue_size": queue_size, "timeout": timeout}
        self._breaker = (breaker_failures, breaker_reset_seconds)
        self._sink = sink
        self._metrics = metrics
        self._lanes: dict[tuple[str, str], ShadowLane] = {}

    def lane(self, model: str, version: str) -> ShadowLane:
        key = (model, version)
        lane = self._lanes.get(key)
        if lane is None:
            lane = ShadowLane(model, version, breaker=CircuitBreaker(*self._breaker),
                              sink=self._sink, metrics=self._metrics, **self._kw)
            self._lanes[key] = lane
        return lane

    def submit(self, job: ShadowJob) -> str | None:
        refused = self.lane(job.model, job.version).offer(job)
        if refused and self._metrics is not None:
            self._metrics.shadow_requests.labels(job.model, job.version, refused).inc()
        return refused

    def breaker_states(self) -> dict[tuple[str, str], str]:
        return {key: lane.breaker.state for key, lane in self._lanes.items()}

    def close(self) -> None:
        for lane in self._lanes.values():
            lane.close()
        self._lanes.clear()
