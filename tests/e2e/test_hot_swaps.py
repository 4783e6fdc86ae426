"""Hot swaps under load against a real 2-worker server: register a version, start a canary,
change shadows, promote, roll back while requests flow. No request fails, and every answer
names a version the deployment held around that moment."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.conftest import DEMO
from tests.e2e.conftest import Server, start_server, stop_server

pytestmark = pytest.mark.e2e
ROW = [0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.02]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    proc, srv = start_server(tmp_path_factory.mktemp("vigil-swaps"))
    yield srv
    stop_server(proc)


def test_swaps_under_load_fail_nothing(server: Server) -> None:
    statuses: Counter[int] = Counter()
    answered: Counter[tuple[str, str]] = Counter()
    stop = threading.Event()

    def load(seed: int) -> None:
        rng = np.random.default_rng(seed)
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set() and time.monotonic() < deadline:
                r = c.post("/predict", json={"model": "diabetes", "instances": [ROW]},
                           headers={"X-Routing-Key": f"u{rng.integers(1 << 30)}"})
                statuses[r.status_code] += 1
                if r.status_code == 200:
                    answered[(r.json()["version"], r.json()["variant"])] += 1

    threads = [threading.Thread(target=load, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    h = server.headers("admin")
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            card = json.loads((DEMO / "diabetes" / "v1" / "card.json").read_text())
            card["version"] = "v2"
            r = c.post("/admin/models/diabetes/versions", headers=h,
                       data={"card": json.dumps(card)},
                       files={"model": (DEMO / "diabetes" / "v1" / "model.onnx").read_bytes(),
                              "reference": ("reference.csv", (DEMO / "diabetes" / "v1" /
                                                              "reference.csv").read_bytes())})
            assert r.status_code == 201, r.text

            def patch(doc: dict) -> None:
                rev = c.get("/admin/deployments/diabetes", headers=h).json()["revision"]
                resp = c.patch("/admin/deployments/diabetes", json=doc,
                               headers={**h, "If-Match": str(rev)})
                assert resp.status_code == 200, resp.text
                time.sleep(1.0)  # let traffic flow through each state

            patch({"shadows": [{"version": "v2", "sample_rate": 1.0}]})
            patch({"shadows": []})
            patch({"canary": {"version": "v2", "weight": 0.5}})
            assert c.post("/admin/deployments/diabetes/promote",
                          headers=h).status_code == 200
            time.sleep(1.0)
            assert c.post("/admin/deployments/diabetes/rollback",
                          headers=h).status_code == 200
            time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert set(statuses) == {200}, statuses
    # every answer came from a version the deployment held as that variant at some point
    assert set(answered) <= {("v1", "champion"), ("v2", "canary"), ("v2", "champion")}
    assert answered[("v2", "canary")] > 0 and answered[("v2", "champion")] > 0
    assert sum(statuses.values()) > 200
