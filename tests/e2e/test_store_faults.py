"""A store that is locked past ``store.busy_timeout_seconds``: predictions keep being answered,
an admin mutation answers 503 with Retry-After (never a 500 or a hang), both failures are
counted on /metrics, and once the lock goes the Monitor catches up without losing or doubling
a record and the mutation succeeds on retry."""

from __future__ import annotations

import sqlite3
from collections import Counter

import httpx
import orjson
import pytest

from tests.e2e.conftest import monitor_counts, start_server, stop_server
from tests.e2e.test_log_faults import ROW, segment_files
from tests.e2e.test_monitoring import wait_for

pytestmark = pytest.mark.e2e


def metric(text: str, series: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(series))


def test_a_locked_store_costs_predictions_nothing_and_admin_writes_get_503(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    proc, srv = start_server(tmp_path_factory.mktemp("vigil-store-lock"),
                             {"VIGIL_STORE__BUSY_TIMEOUT_SECONDS": "0.5"})
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for _ in range(20):
                assert c.post("/predict", json={"model": "diabetes", **ROW}).status_code == 200
            lock = sqlite3.connect(srv.data_dir / "vigil.db", timeout=10, isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")  # every writer now waits, then fails
            try:
                statuses = Counter(c.post("/predict", json={"model": "diabetes", **ROW})
                                   .status_code for _ in range(100))
                assert statuses == {200: 100}
                # answered (the client's 30 s timeout would raise on a hang), not a 500
                r = c.post("/admin/models/diabetes/retrain", headers=srv.headers("operator"))
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"] == "1" and "store" in r.json()["error"]
                text = wait_for(lambda: c.get("/metrics").text,
                                lambda t: metric(t, "vigil_monitor_tick_failures_total") >= 1,
                                timeout=30)
                assert metric(text, 'vigil_store_errors_total{operation="api"}') >= 1
                assert metric(text, "vigil_monitor_tick_failures_total") >= 1
            finally:
                lock.execute("ROLLBACK")
                lock.close()

            r = c.post("/admin/models/diabetes/retrain", headers=srv.headers("operator"))
            assert r.status_code == 202, r.text
            records = [orjson.loads(line) for p in segment_files(srv.data_dir)
                       for line in p.read_bytes().splitlines()]
            expected = Counter((x["data"]["version"], x["data"]["variant"]) for x in records)
            assert sum(expected.values()) == 120

            assert wait_for(lambda: monitor_counts(srv, "diabetes"),
                            lambda got: got == expected, timeout=60) == expected
    finally:
        stop_server(proc)
