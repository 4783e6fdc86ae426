"""An experiment end to end on a real 2-worker server: KPI outcomes through /feedback (an
undeclared KPI refused naming it), an experiment started with the CLI whose arms take over
the split (variant experiment), refused rollouts meanwhile, concluded by the Monitor on the
primary KPI, the winner promoted (auto_promote), audited, and the webhook received."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from tests.e2e.conftest import Server, start_server, stop_server
from tests.e2e.test_cli import as_json, vigil
from tests.e2e.test_monitoring import wait_for
from tests.receivers import Receiver, receiver

pytestmark = pytest.mark.e2e
DATA = load_breast_cancer()
MODEL = "breast_cancer"
RATES = {"v1": 0.10, "v2": 0.45}  # conversion by the version that answered


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Receiver]]:
    with receiver() as rx:
        targets = [{"name": "analysts", "type": "generic", "url": rx.url + "/hook",
                    "events": ["vigil.experiment.concluded"]}]
        proc, srv = start_server(tmp_path_factory.mktemp("vigil-experiments"), {
            "VIGIL_KPIS": json.dumps({MODEL: [
                {"name": "conversion", "kind": "binary", "better": "higher"},
                {"name": "revenue", "kind": "continuous"}]}),
            "VIGIL_WEBHOOKS__TARGETS": json.dumps(targets),
            "VIGIL_WEBHOOKS__DISPATCH_SECONDS": "0.5",
            "VIGIL_DRIFT__FALSE_ALARMS_PER_100K": "0.01"})
        try:
            yield srv, rx
        finally:
            stop_server(proc)


def traffic(c: httpx.Client, srv: Server, rng: np.random.Generator, n: int, start: int
            ) -> Counter[tuple[str, str]]:
    """``n`` predictions with routing keys, each followed by its outcomes."""
    served: Counter[tuple[str, str]] = Counter()
    items = []
    for i in range(start, start + n):
        row = DATA.data[int(rng.integers(len(DATA.target)))]
        r = c.post("/predict", json={"model": MODEL, "instances": [row.tolist()]},
                   headers={"X-Routing-Key": f"user-{i}"})
        assert r.status_code == 200, r.text
        body = r.json()
        served[(body["version"], body["variant"])] += 1
        converted = int(rng.random() < RATES[body["version"]])
        items.append({"request_id": body["request_id"],
                      "kpis": {"conversion": converted, "revenue": 20.0 * converted}})
    for k in range(0, len(items), 200):
        r = c.post("/feedback", json={"model": MODEL, "items": items[k:k + 200]},
                   headers=srv.headers("feedback"))
        assert r.status_code == 202, r.text
    return served


def kpis(c: httpx.Client, srv: Server) -> dict[str, Any]:
    r = c.get(f"/admin/models/{MODEL}/stats", headers=srv.headers("viewer"))
    assert r.status_code == 200, r.text
    return r.json()["kpis"]  # type: ignore[no-any-return]


def test_an_experiment_from_feedback_to_promotion(setup: tuple[Server, Receiver]) -> None:
    srv, rx = setup
    rng = np.random.default_rng(26)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        # KPIs through /feedback: an undeclared one is a 422 naming it
        r = c.post("/feedback", json={"model": MODEL, "request_id": "x",
                                      "kpis": {"churn": 1}}, headers=srv.headers("feedback"))
        assert r.status_code == 422 and r.json()["field"] == "kpis.churn", r.text
        first = traffic(c, srv, rng, 200, 0)  # the demo's champion v1 and canary v2 at 10%
        n_champion = first[("v1", "champion")]
        before = wait_for(lambda: kpis(c, srv),
                          lambda k: k.get("v1", {}).get("champion", {}).get(
                              "conversion", {}).get("count") == n_champion)
        assert before["v1"]["champion"]["conversion"]["count"] == n_champion
        assert before["v1"]["champion"]["revenue"]["sum"] == \
            20 * before["v1"]["champion"]["conversion"]["sum"]
        metrics = wait_for(lambda: c.get("/metrics").text,
                           lambda text: "vigil_model_kpi{" in text, timeout=10)
        line = next(x for x in metrics.splitlines() if x.startswith("vigil_model_kpi{") and
                    'kpi="conversion"' in x and 'stat="count"' in x and 'version="v1"' in x
                    and 'variant="champion"' in x)
        assert float(line.split()[-1]) == n_champion

        # arms must be registered, compatible versions; the primary a declared KPI
        body = {"arms": {"v1": 0.5, "v9": 0.5}, "primary": "conversion", "min_effect": 0.1}
        r = c.post(f"/admin/experiments/{MODEL}", json=body, headers=srv.headers("operator"))
        assert r.status_code == 422 and r.json()["field"] == "arms.v9", r.text
        r = c.post(f"/admin/experiments/{MODEL}", json={**body, "primary": "churn"},
                   headers=srv.headers("operator"))
        assert r.status_code == 422 and r.json()["field"] == "primary", r.text

        # started with the CLI
        started = as_json(vigil(srv, "--json", "experiment", "start", MODEL,
                                "--arms", "v1=0.5,v2=0.5", "--primary", "conversion",
                                "--min-effect", "0.1", "--auto-promote", "--guardrail",
                                '{"metric": "error_rate", "max_increase": 0.05}',
                                role="operator"))
        assert started["status"] == "running" and started["control"] == "v1"
        assert started["max_samples_per_arm"] > started["fixed_horizon_samples_per_arm"] > 0
        again = c.post(f"/admin/experiments/{MODEL}", json={
            "arms": {"v1": 0.5, "v2": 0.5}, "primary": "conversion", "min_effect": 0.1},
            headers=srv.headers("operator"))
        assert again.status_code == 409, again.text
        rollout = c.post(f"/admin/rollouts/{MODEL}", json={"candidate": "v3"},
                         headers=srv.headers("operator"))
        assert rollout.status_code == 409, rollout.text
        assert c.get(f"/admin/experiments/{MODEL}",
                     headers=srv.headers("client")).status_code == 403
        # a running experiment in `vigil status` and the metrics
        st = as_json(vigil(srv, "--json", "status", role="viewer"))
        row = next(m for m in st["models"] if m["model"] == MODEL)
        assert row["experiment"] == {"v1": 0.5, "v2": 0.5}
        assert "experiment v2 50%" in vigil(srv, "status", role="viewer").output
        running = wait_for(lambda: c.get("/metrics").text,
                           lambda t: 'vigil_experiment_running{model="breast_cancer"} 1.0' in t,
                           timeout=10)
        assert 'vigil_experiment_running{model="breast_cancer"} 1.0' in running

        # the arms take over the split: variant experiment, both versions
        served: Counter[tuple[str, str]] = Counter()
        done: dict[str, Any] = {}
        for k in range(12):
            served += traffic(c, srv, rng, 100, 1000 + 100 * k)
            done = wait_for(lambda: c.get(f"/admin/experiments/{MODEL}",
                                          headers=srv.headers("viewer")).json(),
                            lambda d: d["status"] != "running", timeout=2)
            if done["status"] != "running":
                break
        assert {v for v, _ in served} == {"v1", "v2"}
        assert {var for _, var in served} <= {"experiment", "champion"}
        assert done["status"] == "concluded", done
        assert done["decision"] == {"winner": "v2", "reason": "significant"}
        effect = done["effects"][0]
        assert (effect["arm"], effect["vs"]) == ("v2", "v1") and effect["p_value"] <= 0.05
        assert set(done["arms"]) == {"v1", "v2"} and done["concluded_at"]

        # promoted, audited, announced
        d = c.get(f"/admin/deployments/{MODEL}", headers=srv.headers("viewer")).json()
        assert d["champion"]["version"] == "v2" and "experiment" not in d
        audit = c.get("/admin/audit?action=experiment.concluded",
                      headers=srv.headers("viewer")).json()["items"]
        assert audit and audit[0]["actor"] == "system:experiment"
        promote = c.get("/admin/audit?action=promote", headers=srv.headers("viewer")).json()
        assert promote["items"][0]["actor"] == "system:experiment"
        start = c.get("/admin/audit?action=experiment.start",
                      headers=srv.headers("viewer")).json()["items"]
        assert start[0]["actor"] == "operator-token"
        events = wait_for(lambda: [json.loads(x.body) for x in rx.received],
                          lambda e: len(e) >= 1, timeout=30)
        assert [e["type"] for e in events] == ["vigil.experiment.concluded"]
        assert events[0]["data"]["decision"] == {"winner": "v2", "reason": "significant"}
        assert events[0]["data"]["promoted"] is True

        status = vigil(srv, "experiment", "status", MODEL, role="viewer")
        assert status.exit_code == 0 and "concluded" in status.output
        stopped = vigil(srv, "experiment", "stop", MODEL, role="operator")
        assert stopped.exit_code != 0  # nothing running: a conflict
