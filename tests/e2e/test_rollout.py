"""A short rollout against a real 2-worker server under load: the candidate walks its steps
and is promoted by the Monitor's controller, and no request fails on the way."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from tests.e2e.conftest import Server, start_server, stop_server
from tests.e2e.test_monitoring import wait_for

pytestmark = pytest.mark.e2e
DATA = load_breast_cancer()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # The rollout here is about the promotion path. Its load draws real rows, the reference's
    # own distribution, as fast as 2 workers answer (thousands of canary rows): at the default
    # false-alarm budget (1 per 100k rows per version) a drift alarm on the canary alone, and
    # a rightful abort, came in one clean-clone CI run. A 100x smaller budget keeps the gate on.
    proc, srv = start_server(tmp_path_factory.mktemp("vigil-rollout"),
                             {"VIGIL_DRIFT__FALSE_ALARMS_PER_100K": "0.01"})
    yield srv
    stop_server(proc)


def test_a_short_rollout_is_promoted_under_load_without_a_failed_request(server: Server
                                                                         ) -> None:
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    stop = threading.Event()

    def load(seed: int) -> None:
        rng = np.random.default_rng(seed)
        deadline = time.monotonic() + 120  # stops by itself
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set() and time.monotonic() < deadline:
                i = int(rng.integers(len(DATA.target)))
                r = c.post("/predict", json={"model": "breast_cancer",
                                             "instances": [DATA.data[i].tolist()]},
                           headers={"X-Routing-Key": f"k{rng.integers(1 << 40)}"})
                statuses[r.status_code] += 1
                if r.status_code == 200:
                    versions[r.json()["version"]] += 1

    threads = [threading.Thread(target=load, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            spec = {"candidate": "v2", "steps": [0.2, 0.5, 1.0], "min_seconds": 2,
                    "min_requests": 40, "max_wait_seconds": 60, "js_max": 0.2,
                    "latency_ratio": 3.0}
            assert c.post("/admin/rollouts/breast_cancer", json=spec,
                          headers=server.headers("viewer")).status_code == 403
            # as the README's `curl -d` sends it: no JSON Content-Type
            r = c.post("/admin/rollouts/breast_cancer", content=json.dumps(spec),
                       headers={**server.headers("operator"),
                                "Content-Type": "application/x-www-form-urlencoded"})
            assert r.status_code == 201, r.text
            again = c.post("/admin/rollouts/breast_cancer", json=spec,
                           headers=server.headers("operator"))
            assert again.status_code == 409  # one rollout at a time

            def status() -> dict:
                return c.get("/admin/rollouts/breast_cancer",
                             headers=server.headers("viewer")).json()

            done = wait_for(status, lambda d: d["state"]["status"] != "running", timeout=90)
            assert done["state"]["status"] == "promoted", done["state"]["reason"]
            steps = [(h["step"], h["decision"]) for h in done["state"]["history"]]
            assert steps == [(0, "advanced"), (1, "advanced")]
            gates = {g["name"]: g for g in done["state"]["history"][0]["analysis"]["gates"]}
            assert gates["error_rate"]["verdict"] == "pass" and gates["error_rate"]["samples"] >= 40
            deployment = c.get("/admin/deployments/breast_cancer",
                               headers=server.headers("viewer")).json()
            assert deployment["champion"]["version"] == "v2" and deployment.get("canary") is None
            audit = c.get("/admin/audit?limit=50", headers=server.headers("viewer")).json()
            by_system = [i["action"] for i in audit["items"] if i["actor"] == "system:rollout"]
            assert "rollout.promote" in by_system and "rollout.weight" in by_system
            time.sleep(1.0)  # the workers pick the new champion up: traffic on it
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert set(statuses) == {200}, statuses  # no failed request through every step
    assert versions["v1"] > 0 and versions["v2"] > 0
