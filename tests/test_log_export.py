"""``vigil logs export`` (``make logs-export``) on ``log.backend: nats``: the model's partition
of a real JetStream stream from ``--since`` on, plus a spill not yet forwarded, each event id
once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from monitoring.log.jetstream import StreamSpec
from monitoring.log.publisher import NatsWriter
from monitoring.log.sink import render
from monitoring.log.writer import SegmentWriter
from service.cli import app
from tests.natsd import machine_nats
from tests.test_log_publisher import delete_stream, unique_stream, wait
from tests.test_prediction_log import event


@pytest.fixture
def spec() -> Iterator[StreamSpec]:
    s = StreamSpec(url=machine_nats(), name=unique_stream(), partitions=4, timeout=1.0)
    yield s
    asyncio.run(delete_stream(s))


def line(i: int, model: str, ago: float) -> bytes:
    e = event(i)
    e = type(e)(**{**e.__dict__, "model": model, "time": time.time() - ago})
    return render(("p", e, 1.0)).rstrip(b"\n")


def test_export_reads_the_partition_since_and_the_spill_once(tmp_path: Path,
                                                              spec: StreamSpec) -> None:
    streamed = [line(i, "m", ago=60) for i in range(20)]
    old = [line(i, "m", ago=7200) for i in range(100, 105)]  # before --since
    other = [line(i, "other", ago=60) for i in range(200, 210)]
    writer = NatsWriter(spec, tmp_path / "spill", f"gw-1-{time.time_ns()}", bytes)
    for rec in streamed + old + other:
        writer.submit(rec)
    wait(lambda: writer.records_written == 35)
    writer.close()
    # a dead worker's spill, not forwarded yet: five new records, and three that were
    # published too (their acknowledgement lost)
    log_dir = tmp_path / "data" / "log"
    spill = SegmentWriter(log_dir / "spill" / "gw9-1-1", "gw9-1-1", bytes)
    for rec in [line(i, "m", ago=30) for i in range(20, 25)] + streamed[:3]:
        spill.submit(rec + b"\n")
    spill.close()

    out = tmp_path / "preds.parquet"
    result = CliRunner().invoke(app, [
        "logs", "export", "--model", "m", "--since", "1h", "--out", str(out)], env={
        "VIGIL_DATA_DIR": str(tmp_path / "data"), "VIGIL_LOG__BACKEND": "nats",
        "VIGIL_LOG__NATS__URL": spec.url, "VIGIL_LOG__NATS__STREAM": spec.name,
        "VIGIL_LOG__PARTITIONS": "4",
        "VIGIL_CONFIG": str(Path(__file__).resolve().parents[1] / "vigil.yaml")})
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(out)
    assert sorted(df["request_id"]) == sorted(f"r{i}" for i in range(25)), \
        "the partition since --since and the unforwarded spill, each record once"
    assert set(df["model"]) == {"m"}


def test_export_says_when_nats_cannot_be_read(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [
        "logs", "export", "--model", "m", "--out", str(tmp_path / "x.parquet")], env={
        "VIGIL_DATA_DIR": str(tmp_path), "VIGIL_LOG__BACKEND": "nats",
        "VIGIL_LOG__NATS__URL": "nats://127.0.0.1:9", "VIGIL_LOG__NATS__CONNECT_TIMEOUT_SECONDS":
        "0.5", "VIGIL_CONFIG": str(Path(__file__).resolve().parents[1] / "vigil.yaml")})
    assert result.exit_code != 0
    assert "nats://127.0.0.1:9" in result.output
    assert not (tmp_path / "x.parquet").exists()


def test_an_export_ends_at_what_the_stream_held_when_it_began(tmp_path: Path,
                                                              spec: StreamSpec) -> None:
    """Under sustained traffic a partition never runs dry: the export reads up to the
    stream's last sequence when it began (here: the 30th record), not what came after."""
    from monitoring.log.consumer import _partition_since
    from monitoring.log.jetstream import connect
    from monitoring.log.partitions import partition_of
    from monitoring.log.payloads import PayloadOpener

    writer = NatsWriter(spec, tmp_path / "spill", f"gw-1-{time.time_ns()}", bytes)
    for i in range(50):
        writer.submit(line(i, "m", ago=10))
    wait(lambda: writer.records_written == 50)
    writer.close()

    async def export(until: int) -> list[bytes]:
        nc = await connect(spec, reconnect=False)
        try:
            return await _partition_since(nc.jetstream(), spec, partition_of("m", 4), None,
                                          7, PayloadOpener(None, spec.name), until)
        finally:
            await nc.close()

    assert len(asyncio.run(export(until=30))) == 30
    assert len(asyncio.run(export(until=10**9))) == 50
