"""Shadow lanes: each shadow version behind its own bounded queue, thread, timeout and
circuit breaker. A lane answers what is queued as one call and emits each answer as an event,
compared with the primary's, never returned. ``shadows.mirror`` feeds them in the Monitor.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from monitoring.log.events import EventSink, PredictionEvent, agreement
from monitoring.metrics import GatewayMetrics
from monitoring.shadows.guards import CircuitBreaker, RunQueueClock

log = logging.getLogger("vigil.shadows")


class Predicts(Protocol):
    def predict(self, matrix: np.ndarray) -> list[dict[str, Any]]: ...


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
    offered: float = 0.0  # time.monotonic() when it was queued
    logged: list[Any] | None = None  # the request's named inputs as logged: written as they are


# a job, its status, its rows (or None) and its error (or None)
Outcome = tuple[ShadowJob, str, list[dict[str, Any]] | None, str | None]


class ShadowLane:
    """One shadow version's queue, thread and breaker.

    The lane's thread takes every job waiting (up to ``max_batch_rows`` rows), runs them as
    one batch and records each answer itself: the event loop only queues. A thread that
    handed each job back to the loop (``run_in_executor``) had to win the GIL from a busy
    loop several times a job — each a wait of up to the 5 ms switch interval — and kept up
    with about 40 jobs a second per worker; under ``hey -c 16`` it dropped 94% of the
    shadows. Batching pays that wait once per batch.

    A watchdog task in the loop enforces ``timeout``: while the thread is stuck in one call,
    the jobs of that batch, and queued jobs older than the timeout, are recorded as timeouts
    (each a breaker failure); when the call returns at last its answers are discarded.

    A call's time does not count the time the scheduler kept the lane's thread waiting for a
    CPU (``held_back``, a :class:`RunQueueClock` of the thread by default). The Monitor runs
    at a lower priority than the Gateway workers, and at saturation a call of a few ms took
    over the 1 s timeout in wall time: ``make bench`` recorded 34 timeouts of a healthy
    shadow, opened its breaker and shed 34,698 shadows. Starved, the lane is late, not hung;
    a shadow that hangs (blocked, or computing for the timeout) still times out.
    """

    def __init__(self, model: str, version: str, *, queue_size: int, timeout: float,
                 breaker: CircuitBreaker, sink: EventSink, metrics: GatewayMetrics | None,
                 max_batch_rows: int = 4096,
                 loop: asyncio.AbstractEventLoop | None = None,
                 held_back: Callable[[], float] | None = None) -> None:
        self.model, self.version = model, version
        self.timeout = timeout
        self.breaker = breaker
        self.max_batch_rows = max_batch_rows
        self._sink = sink
        self._metrics = metrics
        self._queue: deque[ShadowJob] = deque()
        self._queue_size = queue_size
        self._lock = threading.Lock()  # the queue, the breaker and the batch in flight
        self._ready = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)  # the thread took jobs off the queue
        self._batch: list[ShadowJob] = []  # in the thread's hands
        self._batch_started: float | None = None
        self._batch_held = 0.0  # the thread's run-queue wait when the batch started
        self._recording = 0  # answers taken from the batch, not yet emitted
        self._last_take = time.monotonic()  # when the thread last took jobs (its progress)
        self._closed = False
        # One thread per lane: a hung shadow blocks only its own lane.
        self._thread = threading.Thread(target=self._run, name=f"shadow-{model}-{version}",
                                        daemon=True)
        self._thread.start()
        self._run_queue: RunQueueClock | None = None
        if held_back is None:
            held_back = self._run_queue = RunQueueClock(self._thread.native_id)
        self._held_back = held_back
        # the watchdog runs in ``loop`` (default: the running one), also when the lane is
        # created from another thread (the Monitor's tick runs in one)
        self._watchdog: asyncio.Task[None] | Any
        if loop is None:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch())
        else:
            self._watchdog = asyncio.run_coroutine_threadsafe(self._watch(), loop)

    def offer(self, job: ShadowJob, wait: bool = False) -> str | None:
        """Queue a job; the reason it was refused, if it was. With ``wait`` a full queue is
        waited on for as long as the lane's thread keeps taking jobs, and given up once it
        took none for the timeout (a hung shadow): the Monitor's tick, catching up, may hand
        over more requests at once than the queue holds, and must not shed them."""
        with self._lock:
            if self.breaker.state == "open":
                return "breaker_open"
            while (wait and len(self._queue) >= self._queue_size and not self._closed
                   and (left := self._last_take + self.timeout - time.monotonic()) > 0):
                self._room.wait(left)
            if len(self._queue) >= self._queue_size or self._closed:
                return "dropped"
            if not self.breaker.allow():  # half-open, its one trial already let through
                return "breaker_open"
            job.offered = time.monotonic()
            self._queue.append(job)
            if len(self._queue) == 1:
                if not self._batch:  # an idle thread's clock starts with the work
                    self._last_take = job.offered
                self._ready.notify()
        return None

    def queued(self) -> int:
        return len(self._queue)

    def pending(self) -> int:
        """Jobs queued, in the thread's hands, or being recorded: not yet handed to the sink."""
        with self._lock:
            return len(self._queue) + len(self._batch) + self._recording

    # --------------------------------------------------------------- the lane's thread

    def _take(self) -> list[ShadowJob] | None:
        with self._lock:
            while not self._queue and not self._closed:
                self._ready.wait()
            if self._closed:
                return None
            batch: list[ShadowJob] = []
            rows = 0
            while self._queue and (not batch or
                                   rows + len(self._queue[0].matrix) <= self.max_batch_rows):
                job = self._queue.popleft()
                batch.append(job)
                rows += len(job.matrix)
            self._last_take = time.monotonic()
            self._room.notify_all()
            self._batch, self._batch_started = batch, time.monotonic()
            self._batch_held = self._held_back()
            return batch

    def _run(self) -> None:  # the lane's thread
        while (batch := self._take()) is not None:
            began = time.perf_counter()
            results = self._predict(batch)
            took = time.perf_counter() - began  # each job's latency: the call that answered it
            with self._lock:
                timed_out = self._batch is not batch  # the watchdog recorded it meanwhile
                self._batch, self._batch_started = [], None
                if not timed_out:
                    self._recording = len(results)
                    for _, status, _, _ in results:
                        self.breaker.record(status == "ok")
            if not timed_out:
                try:
                    self._record_batch(results, took)
                finally:
                    self._recording = 0

    def _predict(self, batch: list[ShadowJob]) -> list[Outcome]:
        """One call for the batch (jobs of one lane share the runtime and the width); when
        it fails, each job alone, so one bad input fails only its own job."""
        results: list[Outcome] = []
        if len(batch) > 1:
            try:
                outputs = batch[0].runtime.predict(np.concatenate([j.matrix for j in batch]))
                at = 0
                for job in batch:
                    n = len(job.matrix)
                    results.append((job, "ok", outputs[at:at + n], None))
                    at += n
                return results
            except Exception:  # noqa: S110 — retried one by one below, which names the error
                results = []
        for job in batch:
            try:
                results.append((job, "ok", job.runtime.predict(job.matrix), None))
            except Exception as exc:  # a broken shadow must never take the lane down
                results.append((job, "error", None, f"{type(exc).__name__}: {exc}"[:500]))
        return results

    # --------------------------------------------------------------- the loop's watchdog

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(min(self.timeout / 4, 0.25))
            self.expire()

    def expire(self) -> None:
        """Record as timeouts the batch stuck past the timeout and the jobs queued behind it
        longer than the timeout. The batch's time is the wall time of its call less what the
        thread spent waiting for a CPU meanwhile."""
        now = time.monotonic()
        expired: list[ShadowJob] = []
        with self._lock:
            if self._batch_started is None or now - self._batch_started <= self.timeout:
                return
            if (now - self._batch_started - (self._held_back() - self._batch_held)
                    <= self.timeout):
                return  # late only because the process was starved of CPU
            expired, self._batch = self._batch, []
            while self._queue and now - self._queue[0].offered > self.timeout:
                expired.append(self._queue.popleft())
            for _ in expired:
                self.breaker.record(False)
            self._room.notify_all()
        for job in expired:
            self._record(job, "timeout", None, f"no answer within {self.timeout}s",
                         now - job.offered)

    def _record_batch(self, results: list[tuple[ShadowJob, str, list[dict[str, Any]] | None,
                                                 str | None]], latency: float) -> None:
        """Each answer's event, and the batch's metrics in one increment per series."""
        # in the lane's own thread (not the watchdog's loop) a full log is waited on while
        # its writer makes progress, rather than dropping the answers
        wait = getattr(self._sink, "wait_for_room", None)
        wait = wait if threading.current_thread() is self._thread else None
        statuses: dict[str, int] = {}
        rows = agreed = 0
        for job, status, outputs, error in results:
            statuses[status] = statuses.get(status, 0) + 1
            if wait is not None:
                wait(1, self.timeout)
            try:
                agree = self._emit(job, status, outputs, error, latency)
            except Exception:  # the lane's thread outlives any one record
                log.exception("recording a shadow answer failed")
                continue
            if agree is not None:
                n = len(job.primary_outputs)
                rows += n
                agreed += round(agree * n)
        if self._metrics is not None:
            for status, n in statuses.items():
                self._metrics.shadow_requests.labels(self.model, self.version, status).inc(n)
            if rows:
                self._metrics.shadow_rows.labels(self.model, self.version).inc(rows)
                self._metrics.shadow_agreement.labels(self.model, self.version).inc(agreed)

    def _record(self, job: ShadowJob, status: str, outputs: list[dict[str, Any]] | None,
                error: str | None, latency: float) -> None:
        self._record_batch([(job, status, outputs, error)], latency)

    def _emit(self, job: ShadowJob, status: str, outputs: list[dict[str, Any]] | None,
              error: str | None, latency: float) -> float | None:
        """The answer's event; its agreement with the primary (None without an answer)."""
        agree = agreement(job.primary_outputs, outputs) if outputs is not None else None
        try:
            self._sink.emit(PredictionEvent(
                request_id=job.request_id, model=job.model, version=job.version,
                variant="shadow", time=time.time(), rows=len(job.matrix),
                latency_seconds=latency, status=status,
                inputs=job.logged if job.logged is not None else job.matrix,
                features=None if job.logged is not None else job.features, outputs=outputs,
                error=error, primary_version=job.primary_version, agreement=agree))
        except Exception:
            log.exception("shadow event sink failed")
        return agree

    def close(self) -> None:
        self._watchdog.cancel()
        with self._lock:
            self._closed = True
            self._queue.clear()
            self._ready.notify_all()
            self._room.notify_all()
            if self._run_queue is not None:  # read under the lock only
                self._run_queue.close()


class ShadowPool:
    """Lanes by (model, version), created on first use. Their watchdogs run in ``loop``
    (default: the loop running when the pool is made)."""

    def __init__(self, *, queue_size: int, timeout: float, breaker_failures: int,
                 breaker_reset_seconds: float, sink: EventSink,
                 metrics: GatewayMetrics | None = None, max_batch_rows: int = 4096,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._kw = {"queue_size": queue_size, "timeout": timeout,
                    "max_batch_rows": max_batch_rows}
        self.timeout = timeout
        self._breaker = (breaker_failures, breaker_reset_seconds)
        self._sink = sink
        self._metrics = metrics
        self._loop = loop or asyncio.get_running_loop()
        self._lanes: dict[tuple[str, str], ShadowLane] = {}
        self._lock = threading.Lock()

    def lane(self, model: str, version: str) -> ShadowLane:
        key = (model, version)
        lane = self._lanes.get(key)
        if lane is None:
            with self._lock:
                lane = self._lanes.get(key)
                if lane is None:
                    lane = ShadowLane(model, version, breaker=CircuitBreaker(*self._breaker),
                                      sink=self._sink, metrics=self._metrics,
                                      loop=self._loop, **self._kw)  # type: ignore[arg-type]
                    self._lanes[key] = lane
        return lane

    def submit(self, job: ShadowJob, wait: bool = False) -> str | None:
        refused = self.lane(job.model, job.version).offer(job, wait)
        if refused and self._metrics is not None:
            self._metrics.shadow_requests.labels(job.model, job.version, refused).inc()
        return refused

    def breaker_states(self) -> dict[tuple[str, str], str]:
        return {key: lane.breaker.state for key, lane in list(self._lanes.items())}

    def pending(self) -> int:
        """Jobs of every lane not yet handed to the sink."""
        return sum(lane.pending() for lane in list(self._lanes.values()))

    def close(self) -> None:
        with self._lock:
            for lane in self._lanes.values():
                lane.close()
            self._lanes.clear()
