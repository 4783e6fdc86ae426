"""The prediction log: records, the segment writer, and the reader's tolerance of torn lines,
rotation mid-read and retention. Every test that writes and reads segments runs twice: clear
lines, and encrypted frames (``keys``)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.card import Feature
from monitoring.log.events import PredictionEvent
from monitoring.log.frames import LogKeys, Sealer
from monitoring.log.reader import LocalEventLog, Position, list_segments
from monitoring.log.sink import LogSink, render
from monitoring.log.writer import (
    FEEDBACK,
    PREDICTION,
    SegmentWriter,
    named_inputs,
    prediction_record,
)

FEATURES = (Feature("size", "float"), Feature("color", "category", categories=("red", "blue"),
                                                nullable=True), Feature("new", "bool"))


@pytest.fixture(params=["clear", "encrypted"])
def keys(request: pytest.FixtureRequest) -> LogKeys | None:
    return LogKeys(os.urandom(32)) if request.param == "encrypted" else None


def sealed(keys: LogKeys | None, line: bytes) -> bytes:
    """A line as a writer with ``keys`` puts it on disk."""
    return line if keys is None or keys.active is None else Sealer(keys.active).seal(line)


def event(i: int, variant: str = "champion") -> PredictionEvent:
    return PredictionEvent(
        request_id=f"r{i}", model="m", version="v1", variant=variant, time=1_700_000_000.0 + i,
        rows=1, latency_seconds=0.002, status="ok",
        inputs=np.array([[1.5 + i, 1.0, 0.0]]), features=FEATURES,
        outputs=[{"label": "a", "label_index": 0, "probabilities": {"a": 0.9, "b": 0.1}}])


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def wait_written(writer: SegmentWriter, n: int) -> None:
    deadline = time.monotonic() + 10
    while writer.records_written + sum(writer.dropped.values()) < n:
        assert time.monotonic() < deadline, "writer did not catch up"
        time.sleep(0.01)


def test_record_is_a_cloudevent_with_named_inputs() -> None:
    rec = prediction_record(event(3, "canary"))
    assert {"specversion", "id", "source", "type", "time", "datacontenttype", "data"} <= set(rec)
    assert rec["specversion"] == "1.0" and rec["type"] == PREDICTION
    assert rec["source"] == "/vigil/m/canary"
    assert rec["time"].endswith("Z")
    data = rec["data"]
    assert data["inputs"] == [{"size": 4.5, "color": "blue", "new": False}]
    assert (data["request_id"], data["version"], data["variant"]) == ("r3", "v1", "canary")
    assert data["latency_seconds"] == 0.002 and data["status"] == "ok"


def test_named_inputs_turn_nan_into_null() -> None:
    assert named_inputs(FEATURES, np.array([[np.nan, np.nan, 1.0]])) == [
        {"size": None, "color": None, "new": True}]


def test_writer_then_reader_sees_every_record_once(tmp_path: Path, keys: LogKeys | None) -> None:
    writer = SegmentWriter(tmp_path, "gw1-1-1", render, fsync_seconds=0.05, keys=keys)
    sink = LogSink(writer)
    for i in range(250):
        sink.emit(event(i))
    assert sink.feedback("m", [{"request_id": "r1", "label": "a", "row": 0}], time.time())
    writer.close()
    log = LocalEventLog(tmp_path, keys=keys)
    batch = log.read({}, 100)
    assert len(batch.lines) == 100
    rest = log.read(batch.checkpoint, 10_000)
    records = [orjson.loads(x) for x in batch.lines + rest.lines]
    assert [r["data"]["request_id"] for r in records[:-1]] == [f"r{i}" for i in range(250)]
    assert records[-1]["type"] == FEEDBACK and records[-1]["data"]["label"] == "a"
    assert log.read(rest.checkpoint, 10_000).lines == []
    # closed on shutdown: renamed to .jsonl
    assert [p.name for p in tmp_path.iterdir()] == ["gw1-1-1.000001.jsonl"]


def test_sampling_writes_the_configured_share(tmp_path: Path, keys: LogKeys | None) -> None:
    rng = np.random.default_rng(7)
    writer = SegmentWriter(tmp_path, "gw1-1-1", render, keys=keys)
    sink = LogSink(writer, {"shadow": 0.25}, rand=lambda: float(rng.random()))
    for i in range(2000):
        sink.emit(event(i, "shadow"))
        sink.emit(event(i, "champion"))
    writer.close()
    records = [orjson.loads(x)
               for x in LocalEventLog(tmp_path, keys=keys).read({}, 10_000).lines]
    shadows = [r for r in records if r["data"]["variant"] == "shadow"]
    assert sum(r["data"]["variant"] == "champion" for r in records) == 2000
    assert 400 < len(shadows) < 600
    assert all(r["data"]["sample_rate"] == 0.25 for r in shadows)


def test_torn_last_line_of_a_dead_writer_is_never_read(tmp_path: Path,
                                                       keys: LogKeys | None) -> None:
    path = tmp_path / f"gw1-{dead_pid()}-5.000001.open"
    good = [sealed(keys, orjson.dumps(prediction_record(event(i))) + b"\n") for i in range(3)]
    torn = sealed(keys, b'{"specversion": "1.0", "id": "torn"}\n')[:-9]
    path.write_bytes(b"".join(good) + torn)
    log = LocalEventLog(tmp_path, keys=keys)
    batch = log.read({}, 100)
    assert len(batch.lines) == 3
    assert all(orjson.loads(line) for line in batch.lines)
    backlog = log.backlog(batch.checkpoint)
    assert (backlog.events, backlog.torn_tails) == (0, 1)
    # consumed up to the torn tail and the writer is dead: retention may delete it
    assert log.delete_consumed(batch.checkpoint, older_than=time.time() + 1,
                               max_total_bytes=1 << 30) == [path]


def test_rotation_while_reading_loses_and_repeats_nothing(tmp_path: Path,
                                                          keys: LogKeys | None) -> None:
    writer = SegmentWriter(tmp_path, "gw1-1-1", render, segment_max_bytes=4096,
                           fsync_seconds=0.01, keys=keys)
    sink = LogSink(writer)
    log = LocalEventLog(tmp_path, keys=keys)
    checkpoint: dict[str, Position] = {}
    seen: list[str] = []
    for i in range(600):
        sink.emit(event(i))
        if i % 37 == 0:
            batch = log.read(checkpoint, 50)
            checkpoint = batch.checkpoint
            seen += [orjson.loads(x)["data"]["request_id"] for x in batch.lines]
    writer.close()
    while True:
        batch = log.read(checkpoint, 50)
        if not batch.lines:
            break
        checkpoint = batch.checkpoint
        seen += [orjson.loads(x)["data"]["request_id"] for x in batch.lines]
    assert seen == [f"r{i}" for i in range(600)]
    segments = list_segments(tmp_path)["gw1-1-1"]
    assert len(segments) > 5 and all(s.closed for s in segments)


def test_two_streams_are_read_fairly_and_resumed(tmp_path: Path, keys: LogKeys | None) -> None:
    for stream in ("gw1-1-1", "gw2-2-2"):
        w = SegmentWriter(tmp_path, stream, render, keys=keys)
        for i in range(100):
            w.submit(("p", event(i), 1.0))
        w.close()
    log = LocalEventLog(tmp_path, keys=keys)
    batch = log.read({}, 50)
    assert len(batch.lines) == 50
    assert set(batch.checkpoint) == {"gw1-1-1", "gw2-2-2"}  # both streams advanced
    assert len(log.read(batch.checkpoint, 1000).lines) == 150


def test_full_queue_drops_the_newest_and_counts_it(tmp_path: Path, keys: LogKeys | None) -> None:
    drops: list[tuple[str, int]] = []
    writer = SegmentWriter(tmp_path, "gw1-1-1", render, queue_size=5, fsync_seconds=30,
                           on_drop=lambda r, n: drops.append((r, n)), keys=keys)
    writer._wake.set = lambda: None  # type: ignore[method-assign]  # keep the writer asleep
    results = [writer.submit(("p", event(i), 1.0)) for i in range(8)]
    assert results == [True] * 5 + [False] * 3
    assert writer.dropped == {"queue_full": 3} and drops == [("queue_full", 1)] * 3
    del writer._wake.set  # type: ignore[attr-defined]
    writer.close()
    ids = [orjson.loads(x)["data"]["request_id"]
           for x in LocalEventLog(tmp_path, keys=keys).read({}, 100).lines]
    assert ids == ["r0", "r1", "r2", "r3", "r4"]  # the oldest were kept


def test_a_full_disk_drops_and_counts_without_blocking(tmp_path: Path,
                                                       keys: LogKeys | None) -> None:
    # the segment the writer will open is /dev/full: every write fails with ENOSPC
    (tmp_path / "gw1-1-1.000001.open").symlink_to("/dev/full")
    writer = SegmentWriter(tmp_path, "gw1-1-1", render, keys=keys)
    for i in range(50):
        assert writer.submit(("p", event(i), 1.0))  # accepted at once, never blocks
    wait_written(writer, 50)
    assert writer.records_written == 0
    assert writer.dropped.get("io_error") == 50


def test_an_unwritable_directory_drops_and_counts(tmp_path: Path, keys: LogKeys | None) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    writer = SegmentWriter(blocker / "log", "gw1-1-1", render, keys=keys)
    for i in range(20):
        writer.submit(("p", event(i), 1.0))
    wait_written(writer, 20)
    assert writer.dropped == {"io_error": 20}
    writer.close()


def test_size_cap_drops_instead_of_filling_the_disk(tmp_path: Path, keys: LogKeys | None) -> None:
    (tmp_path / "old.bin").write_bytes(os.urandom(20_000))
    writer = SegmentWriter(tmp_path, "gw1-1-1", render, max_total_bytes=10_000, keys=keys)
    for i in range(10):
        writer.submit(("p", event(i), 1.0))
    wait_written(writer, 10)
    assert writer.dropped == {"log_full": 10}
    writer.close()


def test_retention_deletes_only_consumed_segments(tmp_path: Path, keys: LogKeys | None) -> None:
    writer = SegmentWriter(tmp_path, "gw1-1-1", render, segment_max_bytes=2048, keys=keys)
    for i in range(60):
        writer.submit(("p", event(i), 1.0))
        if i % 10 == 9:
            wait_written(writer, i + 1)
            time.sleep(0.02)
    writer.close()
    log = LocalEventLog(tmp_path, keys=keys)
    segments = list_segments(tmp_path)["gw1-1-1"]
    batch = log.read({}, 25)  # consumes part of the log
    deleted = log.delete_consumed(batch.checkpoint, older_than=time.time() + 60,
                                  max_total_bytes=1 << 30)
    pos = batch.checkpoint["gw1-1-1"]
    wholly_read = [s.path for s in segments if s.seq < pos.seq]
    assert wholly_read and set(wholly_read) <= set(deleted)
    assert set(deleted) <= {s.path for s in segments if s.seq <= pos.seq}
    rest = log.read(batch.checkpoint, 1000)  # the unread part is still all there
    assert len(batch.lines) + len(rest.lines) == 60
    assert log.read(rest.checkpoint, 1000).lines == []


def test_the_renderer_reuses_a_request_s_inputs_for_its_shadow_and_writes_the_same_bytes(
) -> None:
    from monitoring.log.events import PredictionEvent
    from monitoring.log.sink import Renderer, render

    features = (Feature(name="a", dtype="float", nullable=True),
                Feature(name="b", dtype="float"))
    shadow_features = tuple(Feature(name=f.name, dtype=f.dtype, nullable=f.nullable)
                            for f in features)  # another card's, equal
    matrix = np.array([[1.0, 2.5], [np.nan, 4.0]])

    def event(variant: str, feats: tuple[Feature, ...], inputs: np.ndarray) -> PredictionEvent:
        return PredictionEvent(request_id="r1", model="m", version="v1", variant=variant,
                               time=1_700_000_000.0, rows=2, latency_seconds=0.01,
                               status="ok", inputs=inputs, features=feats,
                               outputs=[{"value": 1.0}, {"value": 2.0}])

    r = Renderer(entries=2)
    champion, shadow = event("champion", features, matrix), event("shadow", shadow_features,
                                                                 matrix)
    for e in (champion, shadow):
        got, want = orjson.loads(r(("p", e, 1.0))), orjson.loads(render(("p", e, 1.0)))
        assert {**got, "id": 0}["data"] == {**want, "id": 0}["data"]
        assert got["data"]["inputs"] == [{"a": 1.0, "b": 2.5}, {"a": None, "b": 4.0}]
    assert r.hits == 1
    # another matrix with equal values is rendered afresh; the cache stays bounded
    for _ in range(5):
        r(("p", event("champion", features, matrix.copy()), 1.0))
    assert r.hits == 1 and len(r._cache) == 2


def test_new_ids_are_distinct_time_ordered_uuid7_hex() -> None:
    """Request ids a client did not send: UUID version 7, unique, and ordered by the
    millisecond they were made in (so the Monitor's request-id index grows at its end)."""
    import time
    import uuid

    from monitoring.log.ids import new_id

    before = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(20_000)]  # several refills of the random buffer
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for i in ids[::997]:
        u = uuid.UUID(hex=i)
        assert u.version == 7 and u.variant == uuid.RFC_4122 and u.hex == i
    stamps = [int(i[:12], 16) for i in ids]
    assert stamps == sorted(stamps)
    assert before <= stamps[0] and stamps[-1] <= after


def test_a_forked_worker_never_repeats_its_parents_ids(tmp_path: Path) -> None:
    """BentoML forks its workers: a child that inherited its parent's generator state must
    not make the ids the parent makes next (both start in the same milliseconds here)."""
    from monitoring.log.ids import new_id

    new_id()  # the parent's generator has state before the fork
    theirs = tmp_path / "child.txt"
    pid = os.fork()
    if pid == 0:  # the child: write its ids and leave without running pytest's exit
        try:
            theirs.write_text("\n".join(new_id() for _ in range(20_000)))
        finally:
            os._exit(0)
    mine = {new_id() for _ in range(20_000)}
    assert os.waitpid(pid, 0)[1] == 0
    child = set(theirs.read_text().split("\n"))
    assert len(child) == 20_000 and len(mine) == 20_000
    assert not mine & child


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False),
       st.sampled_from([0.0, 5e-7, -5e-7, 0.9999995]))
def test_iso_time_is_what_datetime_writes(ts: float, nudge: float) -> None:
    """The per-second cache writes every timestamp as datetime.isoformat does, including a
    half microsecond (rounded to even) and one that rounds up into the next second."""
    from datetime import UTC, datetime

    from monitoring.log.writer import iso_time

    for t in (ts, math.floor(ts) + nudge if math.floor(ts) + nudge >= 0 else ts):
        expected = datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds")
        assert iso_time(t) == expected.replace("+00:00", "Z")
