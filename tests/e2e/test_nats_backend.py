"""A real server on ``log.backend: nats`` (the machine's NATS, a stream of its own, SQLite):
its workers publish to JetStream, its Monitor leases every partition and counts exactly the
acknowledged responses (and the shadow's answers, which it publishes too), labels join through
the same log, and ``GET /admin/cluster`` /
``vigil cluster`` name the owner of each partition."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sklearn.datasets import load_breast_cancer
from typer.testing import CliRunner

from monitoring.log.jetstream import StreamSpec, connect
from service.cli import app
from tests.e2e.conftest import (
    TOKENS,
    Server,
    keyed_predictions,
    monitor_counts,
    start_server,
    stop_server,
)
from tests.e2e.test_metrics import exported, rule_series
from tests.natsd import machine_nats

pytestmark = pytest.mark.e2e
N = 120
STREAM = "T" + uuid.uuid4().hex[:12].upper()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    url = machine_nats()
    proc, srv = start_server(tmp_path_factory.mktemp("vigil-nats"), {
        "VIGIL_LOG__BACKEND": "nats", "VIGIL_LOG__NATS__STREAM": STREAM,
        "VIGIL_LOG__PARTITIONS": "4", "VIGIL_LOG__NATS__LEASE_SECONDS": "3"})
    yield srv
    stop_server(proc)

    async def drop() -> None:
        nc = await connect(StreamSpec(url=url, name=STREAM), reconnect=False)
        await nc.jetstream().delete_stream(STREAM)
        await nc.close()

    asyncio.run(drop())


def wait_for(cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_counts_match_the_acknowledged_responses(server: Server, tmp_path: Path) -> None:
    data = load_breast_cancer()

    answers = keyed_predictions(server.url, [
        dict(zip(data.feature_names, data.data[i].tolist(), strict=True)) for i in range(N)])
    acknowledged = Counter((a["version"], a["variant"]) for a in answers)

    def primaries() -> dict[tuple[str, str], int]:
        return {k: n for k, n in monitor_counts(server, "breast_cancer").items()
                if k[1] != "shadow"}

    def shadows() -> int:  # the demo deployment's shadow answers every request
        return sum(n for k, n in monitor_counts(server, "breast_cancer").items()
                   if k[1] == "shadow")

    wait_for(lambda: primaries() == dict(acknowledged) and shadows() == N)

    labels = [{"request_id": a["request_id"], "label": int(data.target[i])}
              for i, a in enumerate(answers[:40])]
    r = httpx.post(f"{server.url}/feedback", json={"model": "breast_cancer", "items": labels},
                   headers=server.headers("feedback"), timeout=30)
    assert r.status_code == 202, r.text

    def joined() -> int:
        r = httpx.get(f"{server.url}/admin/models/breast_cancer/stats",
                      headers=server.headers("viewer"), timeout=10)
        return int(r.json()["feedback"]["joined"])

    wait_for(lambda: joined() == 40)
    assert primaries() == dict(acknowledged) and shadows() == N, "nothing twice"

    body = httpx.get(f"{server.url}/admin/cluster", headers=server.headers("viewer"),
                     timeout=10).json()
    [replica] = body["replicas"]
    assert [p["owner"] for p in body["partitions"]] == [replica["id"]] * 4
    assert all(p["lag_events"] == 0 for p in body["partitions"])

    result = CliRunner(env={"VIGIL_URL": server.url, "VIGIL_TOKEN": TOKENS["viewer"],
                            "COLUMNS": "200"}).invoke(app, ["cluster", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["replicas"][0]["id"] == replica["id"]
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert 'vigil_partition_owned{partition="0"} 1.0' in metrics
    assert 'vigil_monitor_partition_lag_seconds{partition="0"} 0.0' in metrics
    assert "vigil_prediction_log_spilled_total 0.0" in metrics
    missing = rule_series(cluster=True) - exported(metrics)  # the cluster alerts' series
    assert not missing, missing
