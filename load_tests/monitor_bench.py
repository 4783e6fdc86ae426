"""How many log records a second the Monitor consumes, sustained.

    python -m load_tests.monitor_bench [--requests 50000] [--feedback 0.5] [--streams 2]
                                       [--drift] [--per-tick N]

Writes ``--requests`` demo-shaped predictions (30 named features, champion or 10% canary,
plus one shadow record each) and labels for a ``--feedback`` share of them into ``--streams``
segment streams with the real writer, then runs the real Monitor loop over them against a
fresh SQLite store and reports events/s: the same loop and commits as in production, minus
the HTTP server. Nothing touches the network.

With ``--per-tick N`` the log is handed to the Monitor N requests at a time, as the workers
write it between ticks (0.5 s at 1,000 req/s is 500), and each tick's steps are timed in CPU
with the collector held off, as in the server: the cost a record at that step size, fixed
costs of a step included (a catch-up over the whole log hides them).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.card import Feature  # noqa: E402
from monitoring.cluster import PartitionOwner, cluster_tick  # noqa: E402
from monitoring.log.consumer import NatsEventLog  # noqa: E402
from monitoring.log.events import PredictionEvent  # noqa: E402
from monitoring.log.jetstream import StreamSpec  # noqa: E402
from monitoring.log.publisher import NatsWriter  # noqa: E402
from monitoring.log.reader import LocalEventLog  # noqa: E402
from monitoring.log.sink import LogSink, render  # noqa: E402
from monitoring.log.writer import SegmentWriter  # noqa: E402
from monitoring.monitor import Monitor  # noqa: E402
from store import Engine, EventIds, LeaseStore, make_engine, migrate  # noqa: E402

LABELS = ["malignant", "benign"]
FEATURES = tuple(Feature(f"feature {i}", "float") for i in range(30))
PACE = 250  # requests between two waits for the NATS publishers: batches of a busy server's size


def write_log(directory: Path, requests: int, feedback: float, streams: int,
              seed: int = 5) -> int:
    """Demo-shaped records into ``streams`` segment streams under ``directory`` (the real
    segment writer); how many."""
    return emit([LogSink(SegmentWriter(directory, f"gw{k}-{k}-{k}", render, queue_size=1 << 20))
                 for k in range(1, streams + 1)], requests, feedback, seed)


def emit(sinks: list[LogSink], requests: int, feedback: float, seed: int = 5,
         pace: Callable[[], None] | None = None) -> int:
    """``requests`` predictions (champion, or the canary one in ten) with a shadow's answer
    each, and labels for a ``feedback`` share of them, round robin over ``sinks``, which are
    closed (everything written) on return; how many records. ``pace`` is called every
    ``PACE`` requests (to wait for the writers, as a server's requests would)."""
    rng = np.random.default_rng(seed)
    streams = len(sinks)
    matrix = rng.normal(size=(requests, 30))
    p = rng.random(requests)
    records = 0
    for i in range(requests):
        if pace is not None and i % PACE == PACE - 1:
            pace()
        sink = sinks[i % streams]
        out = [{"label": LABELS[int(p[i] > 0.5)], "label_index": int(p[i] > 0.5),
                "probabilities": {"malignant": 1 - p[i], "benign": p[i]}}]
        variant, version = ("canary", "v2") if i % 10 == 0 else ("champion", "v1")
        for var, ver in ((variant, version), ("shadow", "v3")):
            sink.emit(PredictionEvent(
                request_id=f"req-{i}", model="breast_cancer", version=ver, variant=var,
                time=time.time(), rows=1, latency_seconds=0.002, status="ok",
                inputs=matrix[i:i + 1], features=FEATURES, outputs=out))
            records += 1
        if rng.random() < feedback:
            sink.feedback("breast_cancer", [{"request_id": f"req-{i}", "row": 0,
                                             "label": LABELS[int(rng.random() > 0.4)]}],
                          time.time())
            records += 1
    for s in sinks:
        s.close()
    return records


def by_tick(log_dir: Path, per_tick: int, requests: int) -> Iterator[None]:
    """Empty the written segments, then give them back ``per_tick`` requests' records at a
    time (spread over the streams); yields after each piece."""
    streams = {p: p.read_bytes().splitlines(keepends=True) for p in sorted(log_dir.iterdir())}
    for p in streams:
        p.write_bytes(b"")
    total = sum(len(lines) for lines in streams.values())
    # the records a request writes (its prediction, its shadow's, maybe a label), per stream
    step = max(1, round(per_tick * total / max(1, requests) / len(streams)))
    for at in range(0, max(len(lines) for lines in streams.values()), step):
        for p, lines in streams.items():
            with p.open("ab") as f:
                f.write(b"".join(lines[at:at + step]))
        yield


def per_tick_cost(monitor: Monitor, log_dir: Path, per_tick: int, requests: int
                  ) -> tuple[int, float]:
    """(records, median CPU µs a record over the ticks, the first three left out)."""
    import gc
    import statistics

    costs, records = [], 0
    for _ in by_tick(log_dir, per_tick, requests):
        gc.disable()
        t0, n = time.process_time(), 0
        while True:
            r = monitor.step()
            n += r.lines
            if not r.more:
                break
        gc.enable()
        records += n
        if n:
            costs.append((time.process_time() - t0) / n * 1e6)
    return records, statistics.median(costs[3:] or costs)


def publish_log(spec: StreamSpec, spill_dir: Path, requests: int, feedback: float,
                streams: int, seed: int = 5) -> tuple[int, int]:
    """The records of ``write_log`` published to JetStream by ``streams`` real publishers
    (``NatsWriter``), handed over ``PACE`` requests at a time; (records, spilled)."""
    writers = [NatsWriter(spec, spill_dir, f"gw{k}-{os.getpid()}-{k}", render,
                          queue_size=1 << 20) for k in range(1, streams + 1)]

    def drained() -> None:
        while any(w.unwritten for w in writers):
            time.sleep(0.002)

    n = emit([LogSink(w) for w in writers], requests, feedback, seed, pace=drained)
    return n, sum(w.spilled for w in writers)


def nats_monitor(engine: Engine, spec: StreamSpec, batch: int, drift: bool
                 ) -> tuple[Monitor, PartitionOwner]:
    """A replica's Monitor over the stream's partitions (it takes every lease)."""
    owner = PartitionOwner(LeaseStore(engine), "bench", spec.partitions, ttl=600)
    loop = Monitor(engine, NatsEventLog(spec, EventIds(engine), lambda: owner.held),
                   batch_events=batch, class_labels_of=lambda m, v: LABELS,
                   drift=tracker(engine) if drift else None)  # type: ignore[arg-type]
    return loop, owner


def consume_nats(loop: Monitor, owner: PartitionOwner, records: int, timeout: float = 600
                 ) -> tuple[int, float]:
    """Tick as a replica's Monitor does until ``records`` are consumed; (records, seconds)."""
    t0 = time.perf_counter()
    n = 0
    while n < records and time.perf_counter() - t0 < timeout:
        r = cluster_tick(loop, owner)
        n += r.lines if r is not None else 0
    return n, time.perf_counter() - t0


def tracker(engine: object) -> object:
    from monitoring.drift.base import DriftConfig, Reference
    from monitoring.drift.tracker import DriftTracker

    rng = np.random.default_rng(1)
    rows = rng.normal(size=(10_000, 30))
    p = rng.random(10_000)
    reference = Reference([f.name for f in FEATURES], ["numeric"] * 30, {}, rows,
                          np.column_stack([1 - p, p]), LABELS)
    return DriftTracker(engine, lambda m, v: reference, DriftConfig())  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--feedback", type=float, default=0.5)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--drift", action="store_true",
                        help="also run every drift signal on the 30 features (A/B in one run)")
    parser.add_argument("--per-tick", type=int, default=0,
                        help="hand the log over this many requests at a time (see above)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp) / "log"
        t0 = time.perf_counter()
        n = write_log(log_dir, args.requests, args.feedback, args.streams)
        written = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in log_dir.iterdir())
        runs = [("without drift", False)] + ([("with drift", True)] if args.drift else [])
        results = []
        for name, with_drift in runs:
            db = Path(tmp) / f"vigil-{with_drift}.db"
            engine = make_engine(f"sqlite:///{db}")
            migrate(engine)
            monitor = Monitor(engine, LocalEventLog(log_dir), batch_events=args.batch,
                              class_labels_of=lambda m, v: LABELS,
                              drift=tracker(engine) if with_drift else None)
            monitor.load()
            if with_drift:  # build the detectors first: once per version per Monitor start
                t0 = time.perf_counter()
                for version in ("v1", "v2", "v3"):
                    monitor.drift._detector("breast_cancer", version)
                print(f"drift detectors built for 3 versions in {time.perf_counter() - t0:.2f} s")
            if args.per_tick:
                records, cost = per_tick_cost(monitor, log_dir, args.per_tick,
                                                args.requests)
                print(f"Monitor {name}, {args.per_tick} requests a tick: {records} records, "
                      f"{cost:.1f} µs of CPU a record (median over the ticks)")
                continue
            t0 = time.perf_counter()
            result = monitor.tick(budget_seconds=3600)
            results.append((name, result, time.perf_counter() - t0))
    print(f"log: {n} records, {size / 1e6:.1f} MB, written by the segment writer at "
          f"{n / written:,.0f} records/s")
    for name, result, elapsed in results:
        print(f"Monitor {name}: {result.lines} records in {elapsed:.2f} s = "
              f"{result.lines / elapsed:,.0f} events/s (predictions {result.predictions}, "
              f"labels {result.feedback}: {result.labels}, drift alarms {len(result.alarms)})")
    if len(results) == 2:
        (_, r0, t0_), (_, r1, t1_) = results
        per_row = (t1_ - t0_) / r1.predictions * 1e6
        print(f"drift costs {per_row:.1f} µs per prediction row in the Monitor "
              "(record to row conversion and every signal, 30 features)")

if __name__ == "__main__":
    main()
