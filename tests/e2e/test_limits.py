"""Limits and overload against a real server: far more than the limits allow gets 413, 431
or 503 with Retry-After, never a hang or a 5xx of another kind."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import Server, start_server, stop_server

pytestmark = pytest.mark.e2e
ROW = [0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.02]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    proc, srv = start_server(tmp_path_factory.mktemp("vigil-limits"), {
        "VIGIL_LIMITS__MAX_CONCURRENCY": "1", "VIGIL_LIMITS__MAX_ROWS": "500"})
    yield srv
    stop_server(proc)


def test_overload_is_answered_with_503_and_retry_after(server: Server) -> None:
    statuses: Counter[int] = Counter()
    refused: list[httpx.Response] = []
    lock = threading.Lock()

    def flood() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for _ in range(15):
                r = c.post("/predict", json={"model": "diabetes", "instances": [ROW] * 500})
                with lock:
                    statuses[r.status_code] += 1
                    if r.status_code == 503:
                        refused.append(r)

    threads = [threading.Thread(target=flood) for _ in range(12)]
    for t in threads:
        t.start()
    with httpx.Client(base_url=server.url, timeout=30) as c:
        ready = c.get("/readyz").status_code  # probes are never limited
        metrics = c.get("/metrics").status_code
    for t in threads:
        t.join()
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[503] > 0 and statuses[200] > 0, statuses
    assert refused[0].headers["retry-after"] == "1"
    assert refused[0].json()["reason"] == "overloaded"
    assert (ready, metrics) == (200, 200)
    text = httpx.get(f"{server.url}/metrics").text
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith('vigil_request_errors_total{status="503"}'))
    assert counted == statuses[503]


def test_headers_bodies_and_rows_over_their_limits(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/predict", json={"model": "diabetes", "instances": [ROW]},
                   headers={"X-Padding": "x" * 20_000})
        assert r.status_code == 431 and r.json()["field"] == "headers"
        r = c.get("/admin/models", headers={"X-Padding": "x" * 20_000})
        assert r.status_code == 431  # every route
        r = c.post("/predict", json={"model": "diabetes", "instances": [ROW] * 501})
        assert r.status_code == 413 and r.json()["field"] == "instances"
        r = c.post("/predict", content=b"[" + b"1," * 3_000_000 + b"1]",
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["field"] == "body"
        r = c.post("/v2/models/diabetes/infer", json={"inputs": [
            {"name": "X", "shape": [501, 10], "datatype": "FP32", "data": [ROW] * 501}]})
        assert r.status_code == 422 and "limit" in r.json()["error"]
