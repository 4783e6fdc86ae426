"""The prediction log encrypted on NATS (``log.encryption.key`` with ``log.backend: nats``),
against the machine's JetStream: every payload one sealed frame marked ``Vigil-Encoding:
VGE1``, no clear feature value on the wire; the Monitor counts exactly what was published,
old records under a rotated key and clear ones from before included; a tampered message is
counted and skipped, never parsed; a record sealed by a key not configured stops the read
(and the start) with one line; a spill made while NATS is away is sealed on disk and on the
wire after it is forwarded; ``vigil logs export`` opens what it reads."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pandas as pd
import pytest
from typer.testing import CliRunner

from monitoring.cluster import PartitionOwner, cluster_tick
from monitoring.log.consumer import NatsEventLog, check_keys, read_since
from monitoring.log.events import PredictionEvent
from monitoring.log.frames import MAGIC, LogKeyError, LogKeys, Sealer, key_id
from monitoring.log.jetstream import MSG_ID, StreamSpec, connect
from monitoring.log.partitions import partition_of, subject
from monitoring.log.payloads import ENCODING, PayloadOpener
from monitoring.log.publisher import NatsWriter
from monitoring.log.sink import LogSink, render
from monitoring.monitor import Monitor
from service.bootstrap import check_log_keys
from service.cli import app
from service.settings import load_settings
from store import EventIds, LeaseStore, MonitorStateStore, make_engine, migrate, reading
from tests.natsd import NatsServer, machine_nats
from tests.test_log_publisher import delete_stream, stream_messages, unique_stream, wait

MODELS = ("iris", "wine", "breast_cancer")
SECRET = 98765.4321  # a feature value that must never cross the wire in clear
K1, K2, K3 = (os.urandom(32) for _ in range(3))


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def event(i: int) -> PredictionEvent:
    return PredictionEvent(request_id=f"r{i}", model=MODELS[i % len(MODELS)], version="v1",
                           variant="champion", time=time.time(), rows=1,
                           latency_seconds=0.001, status="ok",
                           inputs=[{"secret_feature": SECRET + i}],
                           outputs=[{"value": float(i)}])


def publish(spec: StreamSpec, spill: Path, keys: LogKeys | None, start: int, n: int) -> None:
    writer = NatsWriter(spec, spill, f"gw-1-{time.time_ns()}", render, keys=keys)
    sink = LogSink(writer)
    for i in range(start, start + n):
        sink.emit(event(i))
    wait(lambda: writer.records_written == n)
    writer.close()


def expected(n: int) -> dict[str, int]:
    return {m: len(range(k, n, len(MODELS))) for k, m in enumerate(MODELS)}


async def raw_messages(spec: StreamSpec) -> list[tuple[int, dict[str, str], bytes]]:
    return [(seq, headers, data) for seq, _, headers, data in await stream_messages(spec)]


async def publish_raw(spec: StreamSpec, model: str, payload: bytes,
                      headers: dict[str, str]) -> None:
    nc = await connect(spec, reconnect=False)
    try:
        await nc.jetstream().publish(subject(spec.name, partition_of(model, spec.partitions)),
                                     payload, headers=headers)
    finally:
        await nc.close()


@pytest.fixture
def spec() -> Iterator[StreamSpec]:
    s = StreamSpec(url=machine_nats(), name=unique_stream(), partitions=3, timeout=1.0)
    yield s
    asyncio.run(delete_stream(s))


class Counted:
    """A Monitor over the NATS log in this process, on its own SQLite store."""

    def __init__(self, db: Path, spec: StreamSpec, keys: LogKeys | None) -> None:
        self.engine = make_engine(f"sqlite:///{db}")
        migrate(self.engine)
        self.owner = PartitionOwner(LeaseStore(self.engine), "r1", spec.partitions, ttl=10)
        self.bad: list[int] = []
        self.log = NatsEventLog(spec, EventIds(self.engine), lambda: self.owner.held,
                                keys=keys, on_bad_frame=self.bad.append)
        self.loop = Monitor(self.engine, self.log, class_labels_of=lambda m, v: None,
                            batch_events=100)
        self.loop.load()
        self.invalid = 0

    def drain(self) -> dict[str, int]:
        while (r := cluster_tick(self.loop, self.owner)) is not None and r.lines:
            self.invalid += r.invalid
        with reading(self.engine) as tx:
            saved = MonitorStateStore(self.engine).load(tx)
        return {key[0]: doc["requests"] for key, doc in saved.stats.items()}

    def close(self) -> None:
        self.log.close()
        self.engine.dispose()


def test_sealed_on_the_wire_and_counted_exactly_across_a_rotation(tmp_path: Path,
                                                                   spec: StreamSpec) -> None:
    publish(spec, tmp_path / "spill", None, 0, 60)  # before encryption was turned on
    publish(spec, tmp_path / "spill", LogKeys(K1), 60, 120)
    publish(spec, tmp_path / "spill", LogKeys(K2, (K1,)), 180, 120)  # K1 rotated out
    messages = asyncio.run(raw_messages(spec))
    assert len(messages) == 300
    opener = PayloadOpener(LogKeys(K2, (K1,)), spec.name)
    for seq, headers, data in messages[60:]:
        assert headers[ENCODING] == "VGE1", seq
        assert data.startswith(MAGIC) and data[4:8] in (key_id(K1), key_id(K2))
        record = opener.open(data, headers, seq)
        assert record is not None and headers[MSG_ID] == orjson.loads(record)["id"]
        assert b"secret_feature" not in data and b"98765" not in data
        assert b"iris" not in data and b"wine" not in data
    assert ENCODING not in messages[0][1] and b"secret_feature" in messages[0][2]
    # 8 random bytes per writer + a counter: no nonce twice under a key
    nonces = [data[8:20] for _, _, data in messages[60:]]
    assert len(set(nonces)) == len(nonces)

    monitor = Counted(tmp_path / "a.db", spec, LogKeys(K2, (K1,)))
    try:
        assert monitor.drain() == expected(300), "clear, old-key and new-key records"
        assert not monitor.bad and monitor.invalid == 0
    finally:
        monitor.close()

    # K1 dropped from previous_keys too soon: the read stops at its first record, by name
    stuck = Counted(tmp_path / "b.db", spec, LogKeys(K2))
    try:
        with pytest.raises(LogKeyError) as e:
            stuck.drain()
        assert f"key id {key_id(K1).hex()}" in str(e.value) and spec.name in str(e.value)
        assert "log.encryption.previous_keys" in str(e.value)
        with pytest.raises(LogKeyError):  # and again: it does not skip past it
            stuck.drain()
    finally:
        stuck.close()
    fixed = Counted(tmp_path / "b.db", spec, LogKeys(K2, (K1,)))  # restarted with K1 back
    try:
        assert fixed.drain() == expected(300), "nothing was skipped while it was stuck"
    finally:
        fixed.close()
    check_keys(spec, LogKeys(K2, (K1,)))
    with pytest.raises(LogKeyError, match=key_id(K2).hex()):
        check_keys(spec, LogKeys(K3))


def test_the_server_start_names_a_key_it_lacks(tmp_path: Path, spec: StreamSpec,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    publish(spec, tmp_path / "spill", LogKeys(K1), 0, 9)
    settings = load_settings(data_dir=tmp_path, log={
        "backend": "nats", "partitions": spec.partitions,
        "nats": {"url": spec.url, "stream": spec.name}, "encryption": {"key": b64(K3)}})
    with pytest.raises(SystemExit) as e:
        check_log_keys(settings)
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and key_id(K1).hex() in lines[0]
    check_log_keys(load_settings(data_dir=tmp_path, log={  # with the right key: starts
        "backend": "nats", "partitions": spec.partitions,
        "nats": {"url": spec.url, "stream": spec.name}, "encryption": {"key": b64(K1)}}))


def test_a_tampered_message_is_counted_and_skipped(tmp_path: Path, spec: StreamSpec) -> None:
    keys = LogKeys(K1)
    publish(spec, tmp_path / "spill", keys, 0, 30)
    sealer = Sealer(K1)
    forged = []
    for i in (100, 101, 102):  # records the Monitor would count if it opened them
        frame = bytearray(sealer.seal(render(("p", event(i), 1.0)).rstrip(b"\n")))
        forged.append((i, frame))
    forged[0][1][-1] ^= 1  # the tag
    forged[1][1][40] ^= 1  # the ciphertext
    forged[2][1][12] ^= 1  # the nonce (authenticated with the header)
    for i, frame in forged:
        asyncio.run(publish_raw(spec, event(i).model, bytes(frame),
                                {MSG_ID: f"forged-{i}", ENCODING: "VGE1"}))
    asyncio.run(publish_raw(spec, "iris", MAGIC + b"\x00" * 30,  # no whole frame
                            {MSG_ID: "short", ENCODING: "VGE1"}))
    publish(spec, tmp_path / "spill", keys, 30, 30)  # after them: still read

    monitor = Counted(tmp_path / "a.db", spec, keys)
    try:
        assert monitor.drain() == expected(60)
        assert sorted(monitor.bad) == [31, 32, 33, 34], "each named by its stream sequence"
        assert monitor.log.payloads.bad_frames == 4
        assert monitor.invalid == 0, "skipped, never parsed"
    finally:
        monitor.close()


def test_a_spill_stays_sealed_on_disk_and_on_the_wire(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")  # not started: everything spills
    spec = StreamSpec(url=server.url, name=unique_stream(), partitions=3, timeout=0.5)
    keys = LogKeys(K1)
    writer = NatsWriter(spec, tmp_path / "spill", f"gw-1-{time.time_ns()}", render, keys=keys)
    sink = LogSink(writer)
    try:
        for i in range(90):
            sink.emit(event(i))
        wait(lambda: writer.spilled == 90)
        wait(lambda: writer._spill.unwritten == 0)
        segments = [p for p in (tmp_path / "spill").rglob("*.*")  # not the spill's probe
                    if p.is_file() and p.suffix in (".open", ".jsonl")]
        assert segments
        for seg in segments:
            data = seg.read_bytes()
            assert data.startswith(MAGIC) and b"secret_feature" not in data
        server.start()
        wait(lambda: writer.forwarded == 90 and not writer.spill_pending, timeout=30)
        writer.close()
        messages = asyncio.run(raw_messages(spec))
        records = read_since(spec, range(spec.partitions), None, keys=keys)
    finally:
        server.stop()
    assert len(messages) == 90
    for _, headers, data in messages:
        assert headers[ENCODING] == "VGE1" and data.startswith(MAGIC)
        assert b"secret_feature" not in data and b"98765" not in data
    ids = sorted(int(orjson.loads(r)["data"]["request_id"][1:]) for r in records)
    assert ids == list(range(90))


def test_export_opens_the_stream_with_the_keys(tmp_path: Path, spec: StreamSpec) -> None:
    publish(spec, tmp_path / "spill", None, 0, 6)
    publish(spec, tmp_path / "spill", LogKeys(K1), 6, 30)
    publish(spec, tmp_path / "spill", LogKeys(K2, (K1,)), 36, 30)
    env = {"VIGIL_DATA_DIR": str(tmp_path / "data"), "VIGIL_LOG__BACKEND": "nats",
           "VIGIL_LOG__NATS__URL": spec.url, "VIGIL_LOG__NATS__STREAM": spec.name,
           "VIGIL_LOG__PARTITIONS": str(spec.partitions),
           "VIGIL_CONFIG": str(tmp_path / "none.yaml"), "VIGIL_LOG__ENCRYPTION__KEY": b64(K2)}
    out = tmp_path / "preds.parquet"
    result = CliRunner().invoke(app, ["logs", "export", "--model", "iris", "--since", "1h",
                                      "--out", str(out)],
                                env={**env, "VIGIL_LOG__ENCRYPTION__PREVIOUS_KEYS":
                                     f'["{b64(K1)}"]'})
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(out)
    assert sorted(df["request_id"]) == sorted(f"r{i}" for i in range(0, 66, 3))
    assert sorted(df["input.secret_feature"]) == [SECRET + i for i in range(0, 66, 3)]

    result = CliRunner().invoke(app, ["logs", "export", "--model", "iris", "--out", str(out)],
                                env=env)  # K1 missing from previous_keys
    assert result.exit_code != 0
    assert key_id(K1).hex() in result.output and "previous_keys" in result.output
