"""The Monitor loop against a real store (SQLite, and PostgreSQL when configured): exactly-once
counting across crashes, label joins (late, early, duplicate, unmatched), stats read back."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from models.card import Feature
from monitoring.log.events import PredictionEvent
from monitoring.log.reader import LocalEventLog
from monitoring.log.sink import LogSink, render
from monitoring.log.writer import SegmentWriter
from monitoring.monitor import Monitor, read_stats

FEATURES = (Feature("x", "float"),)
LABELS = ["a", "b"]


def out(p_b: float) -> dict[str, Any]:
    return {"label": "b" if p_b >= 0.5 else "a", "label_index": int(p_b >= 0.5),
            "probabilities": {"a": 1 - p_b, "b": p_b}}


def emit(sink: LogSink, i: int, variant: str = "champion", version: str = "v1",
         p_b: float = 0.7, status: str = "ok") -> None:
    sink.emit(PredictionEvent(
        request_id=f"r{i}", model="m", version=version, variant=variant,
        time=1_700_000_000.0 + i, rows=1, latency_seconds=0.001 * (1 + i % 10), status=status,
        inputs=np.array([[float(i)]]), features=FEATURES,
        outputs=[out(p_b)] if status == "ok" else None,
        error=None if status == "ok" else "boom"))


def monitor(engine: sa.Engine, log_dir: Path, **kw: Any) -> Monitor:
    m = Monitor(engine, LocalEventLog(log_dir), class_labels_of=lambda model, v: LABELS, **kw)
    m.load()
    return m


def variant_counts(engine: sa.Engine) -> dict[tuple[str, str], int]:
    stats = read_stats(engine, "m")
    return {(v, var): r["requests"] for v, d in stats["versions"].items()
            for var, r in d.items()}


def test_counts_each_event_once_across_crashes(engine: sa.Engine, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    writer = SegmentWriter(tmp_path, "gw1-1-1", render, segment_max_bytes=8192)
    sink = LogSink(writer)
    for i in range(500):
        emit(sink, i, "canary" if i % 5 == 0 else "champion", "v2" if i % 5 == 0 else "v1")
        emit(sink, i, "shadow", "v3", status="ok" if i % 50 else "error")
    writer.close()

    first = monitor(engine, tmp_path, batch_events=120)
    first.step()
    first.step()

    # a crash inside the commit: the batch must be neither counted nor skipped
    def crash(*_: Any) -> None:
        raise RuntimeError("killed mid-commit")

    monkeypatch.setattr(first, "_save", crash)
    with pytest.raises(RuntimeError):
        first.step()
    monkeypatch.undo()

    restarted = monitor(engine, tmp_path, batch_events=120)
    restarted.tick()
    assert variant_counts(engine) == {("v1", "champion"): 400, ("v2", "canary"): 100,
                                      ("v3", "shadow"): 500}
    shadow = read_stats(engine, "m")["versions"]["v3"]["shadow"]
    assert (shadow["errors"], shadow["error_rate"]) == (10, 0.02)
    assert read_stats(engine, "m")["monitor"]["lag_events"] == 0

    # a restart after a clean commit reads nothing again
    again = monitor(engine, tmp_path, batch_events=120)
    assert again.tick().lines == 0
    assert sum(variant_counts(engine).values()) == 1000


def test_labels_join_every_version_that_answered(engine: sa.Engine, tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, "gw1-1-1", render)
    sink = LogSink(writer)
    # the label for r0 arrives before its prediction is in the log
    assert sink.feedback("m", [{"request_id": "r0", "label": "b", "row": 0}], 1_700_000_000.0)
    writer.close()
    m = monitor(engine, tmp_path, pending_label_seconds=0)
    result = m.tick()
    assert result.labels == {"pending": 1}

    writer = SegmentWriter(tmp_path, "gw2-2-2", render)
    sink = LogSink(writer)
    emit(sink, 0, p_b=0.8)
    emit(sink, 0, "shadow", "v3", p_b=0.3)
    emit(sink, 1, p_b=0.2)
    sink.feedback("m", [{"request_id": "r1", "label": "a", "row": 0},
                        {"request_id": "r1", "label": "a", "row": 0},  # duplicate
                        {"request_id": "nope", "label": "a", "row": 0}], 1_700_000_001.0)
    writer.close()
    m.tick()
    m.tick()  # caught up: the label for an unknown request gives up (pending_label_seconds=0)
    stats = read_stats(engine, "m")
    assert stats["feedback"] == {"joined": 2, "duplicate": 1, "unmatched": 1}
    champion = stats["versions"]["v1"]["champion"]["quality"]["cumulative"]
    shadow = stats["versions"]["v3"]["shadow"]["quality"]["cumulative"]
    assert (champion["labels"], champion["accuracy"]) == (2, 1.0)
    assert (shadow["labels"], shadow["accuracy"]) == (1, 0.0)  # the shadow said "a" for r0


def test_a_shadow_answer_read_after_a_restart_is_scored_with_the_label_joined_before(
        engine: sa.Engine, tmp_path: Path) -> None:
    """The shadow's answer to r0 was written (the lane answered) but not read when the
    Monitor stopped; r0's label was joined before. The restarted Monitor, which has joined
    no label itself, still scores the answer with it. Caught up, it skips the lookup until
    it joins a label again: a label joined after that still reaches the shadow's answer."""
    writer = SegmentWriter(tmp_path, "gw1-1-1", render)
    sink = LogSink(writer)
    emit(sink, 0, p_b=0.8)
    assert sink.feedback("m", [{"request_id": "r0", "label": "b", "row": 0}], 1_700_000_001.0)
    writer.close()
    keep = {"index_retention_seconds": 1e10}  # the records are from 2023
    m = monitor(engine, tmp_path, **keep)
    assert m.tick().labels == {"joined": 1}

    writer = SegmentWriter(tmp_path, "monitor-9-9", render)  # the lane's answer, unread
    emit(LogSink(writer), 0, "shadow", "v3", p_b=0.9)
    writer.close()
    restarted = monitor(engine, tmp_path, **keep)
    restarted.tick()
    shadow = read_stats(engine, "m")["versions"]["v3"]["shadow"]["quality"]["cumulative"]
    assert (shadow["labels"], shadow["accuracy"]) == (1, 1.0)

    writer = SegmentWriter(tmp_path, "gw1-1-2", render)  # a new request, labelled at once
    sink = LogSink(writer)
    emit(sink, 1, p_b=0.2)
    assert sink.feedback("m", [{"request_id": "r1", "label": "a", "row": 0}], 1_700_000_002.0)
    writer.close()
    assert restarted.tick().labels == {"joined": 1}
    writer = SegmentWriter(tmp_path, "monitor-9-10", render)  # its shadow answers after
    emit(LogSink(writer), 1, "shadow", "v3", p_b=0.9)
    writer.close()
    restarted.tick()
    shadow = read_stats(engine, "m")["versions"]["v3"]["shadow"]
    assert shadow["requests"] == 2
    assert (shadow["quality"]["cumulative"]["labels"],
            shadow["quality"]["cumulative"]["accuracy"]) == (2, 0.5)  # r1: "b", truly "a"


def test_invalid_lines_are_counted_not_fatal(engine: sa.Engine, tmp_path: Path) -> None:
    (tmp_path / "gw1-1-1.000001.jsonl").write_bytes(b'not json\n{"type": "x"}\n')
    m = monitor(engine, tmp_path)
    result = m.tick()
    assert (result.lines, result.invalid) == (2, 2)
    assert m.counters["_"]["invalid_lines"] == 2


def test_a_fast_log_is_trimmed_to_half_its_cap_after_every_tick(engine: sa.Engine,
                                                                  tmp_path: Path) -> None:
    """Retention by size runs after each tick that read records, not once a minute: the
    writers' cap (where they drop) is never reached while the Monitor keeps up."""
    tmp_path = tmp_path / "log"
    writer = SegmentWriter(tmp_path, "gw1-1-1", render, segment_max_bytes=4096)
    sink = LogSink(writer)
    for i in range(200):
        emit(sink, i)
    writer.close()
    total = sum(p.stat().st_size for p in tmp_path.iterdir())
    cap = total  # the directory is at the writers' cap
    m = monitor(engine, tmp_path, log_max_bytes=cap)
    m._last_housekeeping = time.time()  # not the minute's housekeeping: the tick's own
    result = m.tick()
    assert result.predictions == 200
    left = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert 0 < left <= cap // 2, (left, cap)
    assert variant_counts(engine) == {("v1", "champion"): 200}  # nothing deleted unread


def test_housekeeping_expires_the_index_and_consumed_segments(engine: sa.Engine,
                                                              tmp_path: Path) -> None:
    tmp_path = tmp_path / "log"  # the store's files sit in tmp_path itself
    writer = SegmentWriter(tmp_path, "gw1-1-1", render)
    sink = LogSink(writer)
    for i in range(10):
        emit(sink, i)
    writer.close()
    m = monitor(engine, tmp_path, index_retention_seconds=86400, log_retention_seconds=3600)
    m.tick()
    later = 1_700_000_000.0 + 2 * 86400  # two days after the predictions
    m.housekeeping(later)  # index rows older than a day go; the segment is not an hour old yet
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM prediction_index")).scalar() == 0
    assert list(tmp_path.iterdir())
    m.housekeeping(time.time() + 7200)  # consumed and older than the retention: deleted
    assert list(tmp_path.iterdir()) == [] and m.checkpoint == {}
    # a label for an expired prediction cannot be joined any more: counted, not an error
    writer = SegmentWriter(tmp_path, "gw2-2-2", render)
    LogSink(writer).feedback("m", [{"request_id": "r1", "label": "a", "row": 0}], time.time())
    writer.close()
    m.pending_label_seconds = 0
    m.tick()
    m.tick()
    assert read_stats(engine, "m")["feedback"]["unmatched"] == 1


def test_drift_alarms_survive_a_restart_once(engine: sa.Engine, tmp_path: Path) -> None:
    from monitoring.drift.base import DriftConfig, Reference
    from monitoring.drift.tracker import DriftTracker, read_drift

    log_dir = tmp_path / "log"
    rng = np.random.default_rng(2)
    ref_rows = rng.normal(size=(3000, 1))
    reference = Reference(["x"], ["numeric"], {}, ref_rows,
                          np.column_stack([np.full(3000, 0.3), np.full(3000, 0.7)]), LABELS)

    def make() -> Monitor:
        tracker = DriftTracker(engine, lambda m, v: reference, DriftConfig())
        m = Monitor(engine, LocalEventLog(log_dir), class_labels_of=lambda m, v: LABELS,
                    drift=tracker)
        m.load()
        return m

    writer = SegmentWriter(log_dir, "gw1-1-1", render)
    sink = LogSink(writer)
    values = np.concatenate([rng.normal(size=1500), rng.normal(1.0, 1.0, 1500)])
    for i, v in enumerate(values):
        sink.emit(PredictionEvent(
            request_id=f"r{i}", model="m", version="v1", variant="champion",
            time=1_700_000_000.0 + i, rows=1, latency_seconds=0.001, status="ok",
            inputs=np.array([[v]]), features=FEATURES, outputs=[out(0.7)]))
    writer.close()
    first = make()
    first.batch_events = 1600
    first.step()  # the clean part and the start of the shift
    first.step()
    state = read_drift(engine, "m", "v1")
    assert state["rows_seen"] == 3000
    alarms = [a for a in state["alarms"] if a["signal"] == "input_mean"]
    assert len(alarms) == 1 and alarms[0]["features"][0]["feature"] == "x"
    assert 1500 < alarms[0]["rows"] < 1700

    restarted = make()  # reads the detectors back: nothing is re-read, nothing re-raised
    assert restarted.tick().lines == 0
    state = read_drift(engine, "m", "v1")
    assert state["rows_seen"] == 3000
    assert len([a for a in state["alarms"] if a["signal"] == "input_mean"]) == 1
    writer = SegmentWriter(log_dir, "gw2-2-2", render)
    sink = LogSink(writer)
    for i, v in enumerate(rng.normal(1.0, 1.0, 500)):
        sink.emit(PredictionEvent(
            request_id=f"s{i}", model="m", version="v1", variant="champion",
            time=1_700_010_000.0 + i, rows=1, latency_seconds=0.001, status="ok",
            inputs=np.array([[v]]), features=FEATURES, outputs=[out(0.7)]))
    writer.close()
    restarted.tick()
    state = read_drift(engine, "m", "v1")
    assert state["rows_seen"] == 3500  # the detectors carried on from their snapshot
    # still drifted, but the alarm is open until acknowledged: not raised again
    assert len([a for a in state["alarms"] if a["signal"] == "input_mean"]) == 1


def test_a_tick_reads_what_is_there_and_leaves_a_trickle_to_the_next_tick(
        engine: sa.Engine, tmp_path: Path) -> None:
    """A backlog larger than a batch is consumed in one tick, step after step. Records that a
    writer adds while the tick runs wait for the next tick: the tick does not chase them one
    small step (one commit, one snapshot of everything) at a time."""
    writer = SegmentWriter(tmp_path, "gw1-1-1", render)
    sink = LogSink(writer)
    for i in range(25):
        emit(sink, i)
    writer.close()
    m = monitor(engine, tmp_path, batch_events=10)
    steps: list[int] = []
    real_step = m.step

    def counted() -> Any:
        r = real_step()
        steps.append(r.lines)
        return r
    m.step = counted  # type: ignore[method-assign]
    assert m.tick().lines == 25 and steps == [10, 10, 5]

    real_read, added = m.log.read, [0]

    def read_while_writing(checkpoint: Any, max_events: int) -> Any:
        batch = real_read(checkpoint, max_events)
        added[0] += 1  # a worker keeps writing during the step
        trickle = LogSink(SegmentWriter(tmp_path, f"gw1-{added[0] + 1}-1", render))
        emit(trickle, 1000 + added[0])
        trickle.close()
        return batch
    more = LogSink(SegmentWriter(tmp_path, "gw2-1-1", render))
    for i in range(3):
        emit(more, 100 + i)
    more.close()
    m.log.read = read_while_writing  # type: ignore[method-assign]
    steps.clear()
    m.tick()
    assert steps == [3]  # the first step read everything there was; the tick ended
    assert m.status.lag_events == 1  # the record written meanwhile is the next tick's
    m.log.read = real_read  # type: ignore[method-assign]
    steps.clear()
    assert m.tick().lines == 1 and steps == [1]
    assert variant_counts(engine) == {("v1", "champion"): 29}
