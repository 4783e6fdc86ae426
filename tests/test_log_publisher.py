"""The NATS publisher behind a LogSink (log.backend: nats): batches on the partitions'
subjects with the event id as Nats-Msg-Id, and the local spill while NATS is away, forwarded
when it returns, with nothing lost and nothing twice in the stream."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from monitoring.log.jetstream import StreamSpec, connect
from monitoring.log.partitions import partition_of
from monitoring.log.publisher import NatsWriter
from monitoring.log.sink import LogSink, render
from tests.natsd import NatsServer, machine_nats


def unique_stream() -> str:
    return "T" + uuid.uuid4().hex[:12].upper()


async def stream_messages(spec: StreamSpec) -> list[tuple[int, str, dict[str, str], bytes]]:
    """Every message of the stream as stored: sequence, subject, headers, payload."""
    nc = await connect(spec, reconnect=False)
    try:
        js = nc.jetstream()
        info = await js.stream_info(spec.name)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(spec.name, seq)
            out.append((seq, msg.subject or "", dict(msg.headers or {}), msg.data or b""))
        return out
    finally:
        await nc.close()


async def stream_records(spec: StreamSpec) -> list[tuple[str, dict[str, str], dict]]:
    """Every message of the stream: subject, headers, record."""
    return [(subj, headers, orjson.loads(data))
            for _, subj, headers, data in await stream_messages(spec)]


async def delete_stream(spec: StreamSpec) -> None:
    nc = await connect(spec, reconnect=False)
    try:
        await nc.jetstream().delete_stream(spec.name)
    finally:
        await nc.close()


def feedback(sink: LogSink, model: str, i: int) -> None:
    assert sink.feedback(model, [{"request_id": f"r{i}", "label": "a", "row": 0}], time.time())


def wait(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def spec() -> Iterator[StreamSpec]:
    s = StreamSpec(url=machine_nats(), name=unique_stream(), partitions=4, timeout=1.0)
    yield s
    asyncio.run(delete_stream(s))


def test_records_go_to_their_models_partition_with_their_id(tmp_path: Path,
                                                            spec: StreamSpec) -> None:
    writer = NatsWriter(spec, tmp_path / "spill", f"gw-1-{time.time_ns()}", render)
    sink = LogSink(writer)
    for i in range(300):
        feedback(sink, ("iris", "breast_cancer", "diabetes")[i % 3], i)
    wait(lambda: writer.records_written == 300)
    writer.close()
    records = asyncio.run(stream_records(spec))
    assert len(records) == 300
    for subj, headers, rec in records:
        model = rec["data"]["model"]
        assert subj == f"{spec.name}.events.{partition_of(model, 4)}"
        assert headers["Nats-Msg-Id"] == rec["id"]
        assert rec["specversion"] == "1.0" and rec["type"] == "vigil.feedback.v1"
    async def config() -> tuple[float, float]:
        nc = await connect(spec, reconnect=False)
        info = await nc.jetstream().stream_info(spec.name)
        await nc.close()
        return info.config.max_age or 0.0, info.config.duplicate_window or 0.0

    assert asyncio.run(config()) == (spec.max_age, spec.duplicate_window)
    # a model's records keep their order within its partition
    iris = [int(r["data"]["request_id"][1:]) for _, _, r in records if r["data"]["model"] == "iris"]
    assert iris == sorted(iris)
    assert writer.spilled == 0 and not writer.dropped


def test_a_republished_id_is_dropped_by_the_server(tmp_path: Path, spec: StreamSpec) -> None:
    line = orjson.dumps({"specversion": "1.0", "id": "same-id", "source": "/vigil/iris/feedback",
                         "type": "vigil.feedback.v1", "data": {"model": "iris"}})
    writer = NatsWriter(spec, tmp_path / "spill", f"gw-1-{time.time_ns()}", bytes)
    for _ in range(3):
        writer.submit(line)
    wait(lambda: writer.records_written == 3)
    writer.close()
    assert len(asyncio.run(stream_records(spec))) == 1


def test_an_outage_spills_and_forwards_exactly(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats").start()
    spec = StreamSpec(url=server.url, name=unique_stream(), partitions=4, timeout=0.5)
    counts = Counter[str]()
    writer = NatsWriter(spec, tmp_path / "spill", f"gw-1-{time.time_ns()}", render,
                        on_spill=lambda n: counts.update(spilled=n),
                        on_forward=lambda n: counts.update(forwarded=n))
    sink = LogSink(writer)
    sent = 0
    try:
        for phase in ("up", "down", "up again"):
            if phase == "down":
                server.stop()
            elif phase == "up again":
                server.start()
            for _ in range(400):
                feedback(sink, ("iris", "wine")[sent % 2], sent)
                sent += 1
                time.sleep(0.002)
            if phase == "down":
                wait(lambda: writer.spilled > 0)
        wait(lambda: not writer.spill_pending and writer.unwritten == 0, timeout=30)
        writer.close()
        records = asyncio.run(stream_records(spec))
    finally:
        server.stop()
    ids = [int(r["data"]["request_id"][1:]) for _, _, r in records]
    assert sorted(ids) == list(range(sent)), "every acknowledged record, once"
    assert counts["spilled"] > 0
    assert counts["forwarded"] == counts["spilled"] == writer.spilled
    assert not writer.dropped
    assert not list((tmp_path / "spill").rglob("*.jsonl")), "the forwarded spill is deleted"


def test_nats_down_at_start_spills_then_forwards(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")  # not started yet
    spec = StreamSpec(url=server.url, name=unique_stream(), partitions=2, timeout=0.5)
    writer = NatsWriter(spec, tmp_path / "spill", f"gw-1-{time.time_ns()}", render)
    sink = LogSink(writer)
    try:
        for i in range(100):
            feedback(sink, "iris", i)
        wait(lambda: writer.spilled == 100)
        assert not writer.failing, "the spill takes what NATS cannot"
        server.start()
        wait(lambda: writer.forwarded == 100 and not writer.spill_pending, timeout=30)
        writer.close()
        ids = sorted(int(r["data"]["request_id"][1:]) for _, _, r in
                     asyncio.run(stream_records(spec)))
    finally:
        server.stop()
    assert ids == list(range(100))


def test_a_batch_larger_than_a_chunk_is_published_whole_and_in_order(tmp_path: Path,
                                                                    spec: StreamSpec) -> None:
    """2,500 records taken in one batch go out in chunks (their acknowledgements awaited
    chunk by chunk, below the client's limit of pending ones): every one acknowledged, none
    spilled, in the order submitted."""
    from monitoring.log.publisher import PUBLISH_CHUNK

    n = 2 * PUBLISH_CHUNK + PUBLISH_CHUNK // 2
    writer = NatsWriter(spec, tmp_path / "spill", f"gw-1-{time.time_ns()}", render,
                        flush_seconds=0.5)
    sink = LogSink(writer)
    wait(lambda: writer.connected)
    for i in range(n):
        feedback(sink, "iris", i)
    wait(lambda: writer.records_written == n)
    writer.close()
    assert writer.spilled == 0
    records = asyncio.run(stream_records(spec))
    assert [r["data"]["request_id"] for _, _, r in records] == [
        f"r{i}" for i in range(n)]


def test_the_publisher_keeps_its_subscriptions_however_many_batches(tmp_path: Path,
                                                                    spec: StreamSpec) -> None:
    """Acknowledgements come back on one inbox subscription a connection. A JetStream context
    made per batch subscribed a new inbox every batch (20 a second, never removed: 31
    subscriptions after 30 batches)."""
    writer = NatsWriter(spec, tmp_path / "spill", f"gw-1-{time.time_ns()}", render,
                        flush_seconds=0.01)
    sink = LogSink(writer)
    counts = []
    for batch in range(30):
        feedback(sink, "iris", batch)
        wait(lambda batch=batch: writer.records_written == batch + 1)
        assert writer._nc is not None
        counts.append(len(writer._nc._subs))  # nats-py's table of the connection's subscriptions
    writer.close()
    assert counts == [counts[0]] * 30 and counts[0] <= 2


def test_a_broken_spill_refuses_labels_before_taking_any(tmp_path: Path) -> None:
    """NATS away and the spill unwritable: ``failing`` (so /feedback's 503) is known from a
    probe, before a label is taken and lost on the spill; mended, labels are taken again
    without one being risked first, then forwarded."""
    server = NatsServer(tmp_path / "nats")  # not started
    spec = StreamSpec(url=server.url, name=unique_stream(), partitions=2, timeout=0.5)
    (tmp_path / "spill").write_text("a file where the spill directory goes")
    writer = NatsWriter(spec, tmp_path / "spill", f"gw-1-{time.time_ns()}", render)
    sink = LogSink(writer)
    try:
        wait(lambda: writer.failing)
        assert not sink.feedback("iris", [{"request_id": "r0", "label": "a"}], time.time())
        assert writer.spilled == 0 and not writer.dropped, "nothing taken, nothing lost"
        (tmp_path / "spill").unlink()
        wait(lambda: not writer.failing)
        for i in range(50):
            feedback(sink, "iris", i)
        wait(lambda: writer.spilled == 50)
        server.start()
        wait(lambda: writer.forwarded == 50 and not writer.spill_pending, timeout=30)
        writer.close()
        ids = sorted(int(r["data"]["request_id"][1:]) for _, _, r in
                     asyncio.run(stream_records(spec)))
    finally:
        server.stop()
    assert ids == list(range(50)) and not writer.dropped


def test_connected_but_not_acknowledging_with_a_broken_spill_refuses_labels(
        tmp_path: Path, spec: StreamSpec) -> None:
    """NATS answers but does not acknowledge (here: the stream is gone; a leaderless stream
    does the same) and the spill cannot be written: neither path takes a label, so the sink
    refuses them (/feedback's 503) instead of taking them to be dropped; once the stream
    acknowledges again, labels are taken and reach it."""
    (tmp_path / "spill").write_text("a file where the spill directory goes")
    writer = NatsWriter(spec, tmp_path / "spill", f"gw-1-{time.time_ns()}", render)
    sink = LogSink(writer)
    try:
        wait(lambda: writer.connected)
        asyncio.run(delete_stream(spec))
        feedback(sink, "iris", 0)  # in flight when the stream went: lost, and counted
        wait(lambda: writer.failing)
        assert not sink.feedback("iris", [{"request_id": "r1", "label": "a"}], time.time())
        dropped = writer.dropped
        for _ in range(20):  # still refused while NATS does not acknowledge: none taken
            assert not sink.feedback("iris", [{"request_id": "r1", "label": "a"}],
                                     time.time())
            time.sleep(0.05)
        assert writer.dropped == dropped
        asyncio.run(recreate_stream(spec))
        wait(lambda: not writer.failing)
        feedback(sink, "iris", 2)
        wait(lambda: writer.records_written >= 1)
    finally:
        writer.close()
    ids = [r["data"]["request_id"] for _, _, r in asyncio.run(stream_records(spec))]
    assert ids == ["r2"]


async def recreate_stream(spec: StreamSpec) -> None:
    from monitoring.log.jetstream import ensure_stream

    nc = await connect(spec, reconnect=False)
    try:
        await ensure_stream(nc.jetstream(), spec)
    finally:
        await nc.close()
