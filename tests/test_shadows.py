"""Shadows: a Gateway worker only names them in the request's log record; the Monitor runs
them on the logged inputs, off every request's path. A failing shadow trips its breaker."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from models.deployment import Deployment, Shadow
from models.registry import Registry
from monitoring.log.events import InMemoryStatsSink, PredictionEvent
from monitoring.log.export import records
from monitoring.log.reader import LocalEventLog
from monitoring.log.sink import LogSink, Renderer
from monitoring.log.writer import SegmentWriter, prediction_record
from monitoring.metrics import GatewayMetrics
from monitoring.monitor import Monitor, read_stats
from monitoring.shadows.guards import CircuitBreaker
from monitoring.shadows.lanes import ShadowJob, ShadowLane, ShadowPool
from monitoring.shadows.mirror import ShadowMirror
from service.auth import Authenticator
from service.front import FrontDoor
from service.inference import Prediction, Predictor
from service.live import LiveDeployments, Served
from service.predict import decode_predict
from service.settings import load_settings


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
        self.calls = 0

    def predict(self, matrix: np.ndarray) -> list[dict[str, Any]]:
        self.calls += 1
        raise RuntimeError("shadow exploded")


class FixedLive(LiveDeployments):
    def __init__(self, served: Served) -> None:
        self._fixed = served

    def get(self, model: str) -> Served | None:
        return self._fixed if model == self._fixed.deployment.model else None


class ListSink:
    def __init__(self) -> None:
        self.events: list[PredictionEvent] = []

    def emit(self, e: PredictionEvent) -> None:
        self.events.append(e)


def _body(registry: Registry, rows: np.ndarray) -> dict[str, Any]:
    names = registry.get("breast_cancer", "v1").load().card.feature_names
    return {"model": "breast_cancer",
            "inputs": [dict(zip(names, r.tolist(), strict=True)) for r in rows]}


def _predict(served: Served, sink: ListSink, body: dict[str, Any]) -> Prediction:
    """A ``/predict`` body decoded and predicted as the front door does it."""
    settings = load_settings()
    predictor = Predictor(sink)
    door = FrontDoor(settings, Authenticator(settings.auth), FixedLive(served), predictor, None)
    d = decode_predict(door, body)
    return asyncio.run(predictor.run(d.served, d.matrix, d.routing_key, d.version, "rid", 0.0))


def test_a_worker_names_the_routed_shadows_in_the_log_record_and_runs_none(
        registry: Registry) -> None:
    """The answer is the champion's; the shadow's session is never called on the request
    path; the request's record names the shadows sampled for it, and only those."""
    champion = registry.get("breast_cancer", "v1").load()
    never = BrokenRuntime(registry.get("breast_cancer", "v3").load())
    d = Deployment(model="breast_cancer", champion="v1",
                   shadows=(Shadow("v3"), Shadow("v2", 0.0)), salt="s", revision=7)
    sink = ListSink()
    rows = registry.get("breast_cancer", "v1").smoke_rows()[:3]
    r = _predict(Served(d, {"v1": champion, "v3": never, "v2": never}), sink,
                 _body(registry, rows))
    assert r.body["predictions"] == champion.predict(rows)
    assert (r.body["version"], r.body["variant"]) == ("v1", "champion")
    assert never.calls == 0
    (event,) = sink.events
    assert event.shadows == ("v3",)
    data = prediction_record(event)["data"]
    assert data["shadows"] == ["v3"] and len(data["inputs"]) == 3
    # no shadow routed: the record carries no list
    bare = Deployment(model="breast_cancer", champion="v1", salt="s", revision=8)
    sink.events.clear()
    _predict(Served(bare, {"v1": champion}), sink, _body(registry, rows))
    assert "shadows" not in prediction_record(sink.events[0])["data"]


def _logged(registry: Registry, n: int, shadows: tuple[str, ...] = ("v3",)
            ) -> list[dict[str, Any]]:
    """The data of ``n`` champion records as the Monitor reads them from the log."""
    v1 = registry.get("breast_cancer", "v1").load()
    base = registry.get("breast_cancer", "v1").smoke_rows()
    records = []
    for i in range(n):
        matrix = base[i % len(base):i % len(base) + 1 + i % 3]
        event = PredictionEvent(
            request_id=f"r{i}", model="breast_cancer", version="v1", variant="champion",
            time=time.time(), rows=len(matrix), latency_seconds=0.001, status="ok",
            inputs=matrix, features=v1.card.features, outputs=v1.predict(matrix),
            shadows=shadows)
        records.append(orjson.loads(orjson.dumps(
            prediction_record(event), option=orjson.OPT_SERIALIZE_NUMPY))["data"])
    return records


@pytest.mark.parametrize("kind", ["healthy", "slow", "broken", "unloadable"])
def test_the_mirror_runs_each_named_shadow_on_the_logged_inputs(registry: Registry,
                                                                 kind: str) -> None:
    async def scenario() -> None:
        sink = InMemoryStatsSink()
        v3 = registry.get("breast_cancer", "v3").load()
        runtime = {"healthy": v3, "slow": SlowRuntime(v3, 5.0), "broken": BrokenRuntime(v3),
                   "unloadable": None}[kind]

        def runtime_of(model: str, version: str) -> Any:
            if runtime is None:
                raise KeyError(f"{model}:{version} was deleted")
            return runtime

        pool = ShadowPool(queue_size=100, timeout=0.2, breaker_failures=3,
                          breaker_reset_seconds=60, sink=sink)
        mirror = ShadowMirror(pool, runtime_of)
        records = _logged(registry, 8)
        for i in range(0, 8, 2):  # four Monitor steps, two requests each
            assert mirror(records[i:i + 2]) == 2 or kind != "healthy"
            if isinstance(runtime, SlowRuntime):
                # the step went on while the shadow had not finished a single prediction
                assert runtime.finished == 0
            await asyncio.sleep(0.3)
        stats = sink.snapshot()["breast_cancer"]
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


def test_the_mirror_answers_a_step_in_one_call_each_request_with_its_own_rows(
        registry: Registry) -> None:
    """A step's requests are decoded together and answered by one call of the shadow; each
    shadow event carries its own request's rows and outputs, and the metrics count every
    request, row and agreement. Records without shadows, failed ones and a shadow that is
    the primary itself are skipped."""
    async def scenario() -> tuple[list[int], ListSink, GatewayMetrics, list[dict[str, Any]]]:
        sink = ListSink()
        counting = PickyRuntime(registry.get("breast_cancer", "v3").load())
        metrics = GatewayMetrics(CollectorRegistry())
        pool = ShadowPool(queue_size=64, timeout=5, breaker_failures=100,
                          breaker_reset_seconds=60, sink=sink,  # type: ignore[arg-type]
                          metrics=metrics)
        records = _logged(registry, 8)
        skipped = _logged(registry, 3, shadows=())
        skipped[1]["shadows"] = ["v1"]  # the primary's own version
        skipped[2].update(shadows=["v3"], status="error", outputs=None)
        assert ShadowMirror(pool, lambda m, v: counting)(records + skipped) == 8
        for _ in range(500):
            if len(sink.events) == 8:
                break
            await asyncio.sleep(0.01)
        pool.close()
        return counting.calls, sink, metrics, records

    calls, sink, metrics, records = asyncio.run(scenario())
    v3 = registry.get("breast_cancer", "v3").load()
    total = sum(len(r["inputs"]) for r in records)
    assert calls == [total]
    by_id = {e.request_id: e for e in sink.events}
    assert sorted(by_id) == sorted(r["request_id"] for r in records)
    for r in records:
        e = by_id[r["request_id"]]
        assert (e.variant, e.version, e.primary_version, e.status) == \
            ("shadow", "v3", "v1", "ok")
        assert e.rows == len(r["inputs"])
        assert e.outputs == v3.predict(np.array(
            [[row[f.name] for f in v3.card.features] for row in r["inputs"]]))
    ok = metrics.shadow_requests.labels("breast_cancer", "v3", "ok")._value.get()
    rows = metrics.shadow_rows.labels("breast_cancer", "v3")._value.get()
    agreed = metrics.shadow_agreement.labels("breast_cancer", "v3")._value.get()
    expected = sum(round(e.agreement * e.rows) for e in sink.events)  # type: ignore[operator]
    assert (ok, rows, agreed) == (8, total, expected)


def test_the_monitor_reads_the_answers_of_the_shadows_it_ran(registry: Registry,
                                                            engine: sa.Engine,
                                                            tmp_path: Path) -> None:
    """End to end through the log: a worker's records name a shadow; the Monitor's step
    mirrors them after its commit, the shadow's answers go to the Monitor's own stream, and
    a later tick counts them once, as variant ``shadow`` of v3 (records read again after a
    restart are not mirrored twice: they were committed). Labels that arrived right after
    the requests, joined before the shadow had answered, still score the shadow."""
    async def scenario() -> None:
        worker = SegmentWriter(tmp_path, "gw0-1-1", Renderer())
        wsink = LogSink(worker)
        v1 = registry.get("breast_cancer", "v1").load()
        base = registry.get("breast_cancer", "v1").smoke_rows()
        for i in range(30):
            matrix = base[i % len(base):i % len(base) + 1]
            wsink.emit(PredictionEvent(
                request_id=f"r{i}", model="breast_cancer", version="v1", variant="champion",
                time=time.time(), rows=1, latency_seconds=0.001, status="ok", inputs=matrix,
                features=v1.card.features, outputs=v1.predict(matrix), shadows=("v3",)))
        truth = ["benign" if i % 3 else "malignant" for i in range(30)]
        assert wsink.feedback("breast_cancer", [{"request_id": f"r{i}", "label": truth[i]}
                                                for i in range(30)], time.time())
        worker.close()
        mon_writer = SegmentWriter(tmp_path, "monitor-2-2", Renderer(), flush_seconds=0.01)
        pool = ShadowPool(queue_size=100, timeout=5, breaker_failures=3,
                          breaker_reset_seconds=60, sink=LogSink(mon_writer))
        labels = ["malignant", "benign"]
        mirror = ShadowMirror(pool, lambda mo, v: registry.get(mo, v).load(),
                              unwritten=lambda: mon_writer.unwritten)
        m = Monitor(engine, LocalEventLog(tmp_path), class_labels_of=lambda *_: labels,
                    mirror=mirror)
        m.load()
        m.tick()
        assert m.status.lag_events > 0  # the shadows' answers are owed
        for _ in range(500):  # the lane answers, the writer flushes
            await asyncio.sleep(0.01)
            if mirror.pending() == 0:
                break
        mon_writer.close()
        pool.close()
        m.tick()
        counts = {(v, var): r["requests"] for v, d in
                  read_stats(engine, "breast_cancer")["versions"].items()
                  for var, r in d.items()}
        assert counts == {("v1", "champion"): 30, ("v3", "shadow"): 30}
        shadow = read_stats(engine, "breast_cancer")["versions"]["v3"]["shadow"]
        assert shadow["errors"] == 0
        v3 = registry.get("breast_cancer", "v3").load()
        said = [v3.predict(base[i % len(base):i % len(base) + 1])[0]["label"]
                for i in range(30)]
        # the shadow's record carries its request's inputs as logged, and the comparison
        logged = [r["data"] for r in records(tmp_path) if r["type"] == "vigil.prediction.v1"]
        primary = {d["request_id"]: d for d in logged if d["variant"] == "champion"}
        answers = [d for d in logged if d["variant"] == "shadow"]
        assert sorted(d["request_id"] for d in answers) == sorted(primary)
        for d in answers:
            assert d["inputs"] == primary[d["request_id"]]["inputs"]
            assert (d["version"], d["primary_version"]) == ("v3", "v1")
            assert d["agreement"] in (0.0, 1.0) and "shadows" not in d
        quality = shadow["quality"]["cumulative"]
        assert quality["labels"] == 30
        assert quality["accuracy"] == pytest.approx(
            sum(s == t for s, t in zip(said, truth, strict=True)) / 30)
        class Twice:
            def __call__(self, records: list[dict[str, Any]]) -> None:
                pytest.fail("mirrored twice")

            def pending(self) -> int:
                return 0

        again = Monitor(engine, LocalEventLog(tmp_path), class_labels_of=lambda *_: labels,
                        mirror=Twice())
        again.load()
        again.tick()
        assert again.status.lag_events == 0

    asyncio.run(scenario())


class PacedRuntime:
    """A shadow that takes ``delay`` per call, whatever the batch."""

    def __init__(self, inner: Any, delay: float) -> None:
        self.card, self.inner, self.delay = inner.card, inner, delay

    def predict(self, matrix: np.ndarray) -> list[dict[str, Any]]:
        time.sleep(self.delay)
        return self.inner.predict(matrix)


def test_a_full_lane_is_waited_on_while_it_works_and_given_up_when_it_hangs(
        registry: Registry) -> None:
    """A tick that hands over more requests than a lane holds waits for room while the
    lane's thread keeps taking jobs (the Monitor catching up must not shed shadows); when
    the thread took nothing for the shadow's timeout (hung), the job is dropped and counted."""
    v1 = registry.get("breast_cancer", "v1").load()
    v3 = registry.get("breast_cancer", "v3").load()
    row = registry.get("breast_cancer", "v1").smoke_rows()[:1]

    def job(runtime: Any, i: int) -> ShadowJob:
        return ShadowJob(f"x{i}", "breast_cancer", "v3", runtime, row, "v1", v1.predict(row))

    def pool_of(timeout: float, sink: Any) -> tuple[ShadowPool, GatewayMetrics]:
        metrics = GatewayMetrics(CollectorRegistry())
        return ShadowPool(queue_size=4, timeout=timeout, breaker_failures=100,
                          breaker_reset_seconds=60, sink=sink, metrics=metrics), metrics

    async def working() -> None:
        sink = ListSink()
        pool, metrics = pool_of(1.0, sink)
        paced = PacedRuntime(v3, 0.05)  # each call 50 ms: slower than jobs are offered
        outcomes = await asyncio.to_thread(
            lambda: [pool.submit(job(paced, i), True) for i in range(40)])
        assert outcomes == [None] * 40  # ten times the queue, none shed
        for _ in range(300):
            if len(sink.events) == 40:
                break
            await asyncio.sleep(0.01)
        assert len(sink.events) == 40
        assert pool.submit(job(paced, 99)) is None
        pool.close()

    async def hung() -> None:
        pool, metrics = pool_of(0.3, ListSink())
        slow = SlowRuntime(v3, 30.0)
        lane = pool.lane("breast_cancer", "v3")
        assert pool.submit(job(slow, 0)) is None  # the lane's thread takes it and hangs
        for _ in range(200):
            if lane.queued() == 0:
                break
            await asyncio.sleep(0.01)
        for i in range(1, 5):
            assert pool.submit(job(slow, i)) is None
        assert pool.submit(job(slow, 5)) == "dropped"  # full, and told not to wait
        # told to wait: it does, until the thread took nothing for the timeout
        assert await asyncio.to_thread(pool.submit, job(slow, 6), True) == "dropped"
        assert metrics.shadow_requests.labels("breast_cancer", "v3",
                                              "dropped")._value.get() == 2
        slow.release.set()
        pool.close()

    asyncio.run(working())
    asyncio.run(hung())


def test_a_call_late_because_the_thread_waited_for_a_cpu_is_not_a_timeout(
        registry: Registry) -> None:
    """The watchdog takes from a call's time what the lane's thread spent waiting for a CPU:
    a call 0.6 s late against a 0.2 s timeout is answered when the scheduler held the thread
    back all along (a starved Monitor), and is a timeout, breaker failure and discarded
    answer when the thread was blocked meanwhile (a hung shadow)."""
    v1 = registry.get("breast_cancer", "v1").load()
    v3 = registry.get("breast_cancer", "v3").load()
    row = registry.get("breast_cancer", "v1").smoke_rows()[:1]

    async def run(starved: bool) -> list[str]:
        sink = ListSink()
        slow = SlowRuntime(v3, 0.6)
        began = time.monotonic()
        lane = ShadowLane("breast_cancer", "v3", queue_size=4, timeout=0.2,
                          breaker=CircuitBreaker(1, 60), sink=sink, metrics=None,
                          held_back=(lambda: time.monotonic() - began) if starved
                          else (lambda: 0.0))
        assert lane.offer(ShadowJob("r0", "breast_cancer", "v3", slow, row, "v1",
                                    v1.predict(row))) is None
        for _ in range(200):
            if slow.finished and not lane.pending():
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # a discarded answer would have arrived by now
        states = [e.status for e in sink.events] + [lane.breaker.state]
        lane.close()
        return states

    assert asyncio.run(run(starved=True)) == ["ok", "closed"]
    assert asyncio.run(run(starved=False)) == ["timeout", "open"]


STARVED_LANE = """
import asyncio, json, os, sys, time
sys.path.insert(0, sys.argv[2])
from monitoring.shadows.guards import CircuitBreaker
from monitoring.shadows.lanes import ShadowJob, ShadowLane
from service.process import lower_priority
import numpy as np

os.sched_setaffinity(0, {int(sys.argv[1])})
lower_priority(19)  # the Monitor's own way down, to the bottom

class Busy:  # a healthy shadow: 20 ms of its thread's CPU a call
    def predict(self, matrix):
        end = time.thread_time() + 0.02
        while time.thread_time() < end:
            pass
        return [{"label": 0}] * len(matrix)

class Sink:
    def __init__(self):
        self.events = []
    def emit(self, e):
        self.events.append(e)

async def run(counted):
    sink = Sink()
    lane = ShadowLane("m", "v", queue_size=4, timeout=0.5, breaker=CircuitBreaker(1, 60),
                      sink=sink, metrics=None, held_back=None if counted else (lambda: 0.0))
    began = time.monotonic()
    lane.offer(ShadowJob("r", "m", "v", Busy(), np.zeros((1, 3)), "v0", [{"label": 0}]))
    while not sink.events and time.monotonic() - began < 60:
        await asyncio.sleep(0.05)
    lane.close()
    return [e.status for e in sink.events], time.monotonic() - began

print(json.dumps({"wall_clock": asyncio.run(run(False)), "run_queue": asyncio.run(run(True))}))
"""


@pytest.mark.skipif(not Path("/proc/thread-self/schedstat").exists(),
                    reason="needs Linux's per-thread scheduler statistics (/proc schedstat)")
def test_a_shadow_starved_by_the_request_path_is_answered_not_timed_out() -> None:
    """For real: a lane at nice 19 on one CPU shared with a busy process at nice 0, in
    sessions of their own as the Monitor and the Gateway workers are. Its healthy shadow
    (20 ms of CPU a call) takes seconds of wall time. Timed on the wall clock alone, the
    call is a timeout (which shows the lane was starved); with the run-queue clock, the
    default, it is answered."""
    import json
    import subprocess
    import sys

    cpu = sorted(os.sched_getaffinity(0))[-1]
    hog = subprocess.Popen([sys.executable, "-c", f"import os\nos.sched_setaffinity(0, "
                            f"{{{cpu}}})\nwhile True:\n    pass"], start_new_session=True)
    try:
        out = subprocess.run([sys.executable, "-c", STARVED_LANE, str(cpu),
                              str(Path(__file__).resolve().parent.parent)],
                             capture_output=True, text=True, timeout=180,
                             start_new_session=True)
    finally:
        hog.kill()
        hog.wait()
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    statuses, wall = result["wall_clock"]
    assert statuses == ["timeout"], result  # starved: over the timeout in wall time
    statuses, wall = result["run_queue"]
    assert statuses == ["ok"] and wall > 0.5, result  # as late, and answered


def test_a_lane_waits_for_the_log_rather_than_drop_its_answers(registry: Registry,
                                                               tmp_path: Path) -> None:
    """A tick's answers come as one batch, more than the log's queue holds: the lane's thread
    waits for the writer instead of dropping them."""
    async def scenario() -> None:
        drops: list[tuple[str, int]] = []
        writer = SegmentWriter(tmp_path, "monitor-1-1", Renderer(), queue_size=16,
                               on_drop=lambda reason, n: drops.append((reason, n)))
        pool = ShadowPool(queue_size=1000, timeout=5, breaker_failures=3,
                          breaker_reset_seconds=60, sink=LogSink(writer))
        mirror = ShadowMirror(pool, lambda m, v: registry.get(m, v).load(),
                              unwritten=lambda: writer.unwritten)
        assert mirror(_logged(registry, 200)) == 200
        for _ in range(1000):
            if mirror.pending() == 0:
                break
            await asyncio.sleep(0.01)
        pool.close()
        writer.close()
        assert drops == []
        answers = [r for r in records(tmp_path) if r["data"]["variant"] == "shadow"]
        assert len(answers) == 200

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


def test_a_shadow_sees_hashed_and_dropped_inputs_as_null() -> None:
    """The log holds a hex hash for a ``pii: hash`` input (and nothing for ``drop``): the
    shadow decodes them as null instead of failing on every request."""
    from models.card import Feature, ModelCard

    card = ModelCard("m", "2", "regression",
                     (Feature("x", "float"), Feature("ssn", "float", pii="hash", nullable=True),
                      Feature("age", "float", pii="drop", nullable=True)), "X", "matrix",
                     "float32", (), {"value": "v"}, {})
    from typing import cast

    mirror = ShadowMirror(cast(ShadowPool, None), lambda m, v: None)  # decoding needs no pool
    items = [{"request_id": "r1", "inputs": [{"x": 1.5, "ssn": "9f" * 32}]}]
    (matrix,) = mirror._matrices(card, items, ("m", "2"))
    assert matrix is not None and matrix[0, 0] == 1.5 and np.isnan(matrix[0, 1:]).all()
    assert items[0]["inputs"][0]["ssn"] == "9f" * 32  # the record itself is left as logged
