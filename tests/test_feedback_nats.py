"""``POST /feedback`` on ``log.backend: nats`` (the Gateway as an ASGI app in this process, a
nats-server the test starts and stops): labels are taken (202) while NATS is away and the
spill takes them, refused with 503 and ``Retry-After`` only once the spill cannot take them
either (here: at its cap, ``log.retention_max_bytes``), and every label taken reaches the
stream once NATS is back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from monitoring.log.jetstream import StreamSpec, connect
from tests.conftest import asgi_gateway
from tests.natsd import NatsServer
from tests.test_log_publisher import stream_records, unique_stream, wait

CAP = 1024 * 1024  # the smallest log.retention_max_bytes
BATCH = 100


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, nats: NatsServer,
            registry: Any) -> Iterator[tuple[TestClient, Path, StreamSpec]]:
    data = tmp_path_factory.mktemp("feedback-nats")
    spec = StreamSpec(url=nats.url, name=unique_stream(), partitions=2)
    with asgi_gateway(data, {
        "VIGIL_AUTH__FEEDBACK": "open",
        "VIGIL_LOG__BACKEND": "nats", "VIGIL_LOG__NATS__URL": nats.url,
        "VIGIL_LOG__NATS__STREAM": spec.name, "VIGIL_LOG__PARTITIONS": "2",
        "VIGIL_LOG__NATS__CONNECT_TIMEOUT_SECONDS": "0.5",
        "VIGIL_LOG__RETENTION_MAX_BYTES": str(CAP),
    }) as c:
        yield c, data / "log" / "spill", spec


def labels(start: int) -> dict[str, Any]:
    return {"model": "breast_cancer", "items": [
        {"request_id": f"r{i}", "label": "benign"} for i in range(start, start + BATCH)]}


def stored(spec: StreamSpec) -> int:
    """Messages in the stream (0 while the restarted server recovers it)."""

    async def count() -> int:
        nc = await connect(spec, reconnect=False)
        try:
            return (await nc.jetstream().stream_info(spec.name)).state.messages
        except Exception:
            return 0
        finally:
            await nc.close()

    return asyncio.run(count())


def spilled_lines(spill: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in spill.rglob("*.*")
               if p.suffix in (".open", ".jsonl"))


def test_labels_spill_while_nats_is_away_and_503_only_when_the_spill_is_full(
        gateway: tuple[TestClient, Path, StreamSpec], nats: NatsServer) -> None:
    client, spill, spec = gateway
    sent = 0
    r = client.post("/feedback", json=labels(sent))
    assert r.status_code == 202, r.text
    sent += BATCH
    nats.stop()
    refused = None
    spilled = 0
    for _ in range(CAP // (BATCH * 200) + 40):  # a label's record is ~250 bytes
        r = client.post("/feedback", json=labels(sent))
        if r.status_code != 202:
            refused = r
            break
        sent += BATCH
        spilled += BATCH
        wait(lambda n=spilled: spilled_lines(spill) >= n)  # written before the next batch
    assert spilled >= 2 * BATCH, "labels were taken onto the spill while NATS was away"
    assert refused is not None, "the spill at its cap refuses labels"
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert refused.json()["error"].startswith("the prediction log cannot take labels")
    # Known window (docs/monitoring.md): the batch taken just before the write that reached
    # the cap is dropped at the write (log_full), not refused; every other label taken must
    # reach the stream, once.
    window = set(range(sent - BATCH, sent))
    nats.start()
    wait(lambda: stored(spec) >= sent - BATCH, timeout=30)  # the spill forwarded
    r = client.post("/feedback", json=labels(sent))
    assert r.status_code == 202, "NATS back: labels are taken again"
    sent += BATCH

    def taken_ids() -> list[int]:
        return [int(rec["data"]["request_id"][1:]) for _, _, rec in
                asyncio.run(stream_records(spec))]

    wait(lambda: set(range(sent)) - set(taken_ids()) <= window, timeout=30)
    ids = taken_ids()
    assert len(ids) == len(set(ids)), "no label twice"
    assert set(range(sent)) - set(ids) <= window, "every label taken reached the stream"
