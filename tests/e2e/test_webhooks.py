"""Retraining webhooks end to end: a real 2-worker server, its Monitor and real receivers on
127.0.0.1. Drift fires a signed webhook once; the cooldown holds a second alarm; a hanging
target costs /predict nothing; dead letters are redelivered; a Monitor killed between the
outbox write and the send delivers after its restart."""

from __future__ import annotations

import base64
import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from standardwebhooks import Webhook

from tests.conftest import DEMO
from tests.e2e.conftest import Server, start_server, stop_server
from tests.e2e.test_drift import send
from tests.e2e.test_log_faults import workers
from tests.e2e.test_monitoring import wait_for
from tests.receivers import Receiver, receiver

pytestmark = pytest.mark.e2e
SECRET = "whsec_" + base64.b64encode(b"e2e-secret-bytes-0123456789ab").decode()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Server, Receiver,
                                                                       Receiver]]:
    with receiver() as good, receiver(["hang:5"]) as hang:
        targets = [{"name": "good", "type": "generic", "url": good.url + "/hook",
                    "secret_env": "VIGIL_TEST_WH_SECRET"},
                   {"name": "hang", "type": "generic", "url": hang.url + "/hook",
                    "secret_env": "VIGIL_TEST_WH_SECRET"}]
        proc, srv = start_server(tmp_path_factory.mktemp("vigil-webhooks"), {
            "VIGIL_TEST_WH_SECRET": SECRET,
            "VIGIL_WEBHOOKS__TARGETS": json.dumps(targets),
            "VIGIL_WEBHOOKS__TIMEOUT_SECONDS": "1",
            "VIGIL_WEBHOOKS__DISPATCH_SECONDS": "0.5",
            "VIGIL_WEBHOOKS__SCHEDULE_SECONDS": "[0, 1, 1]",
            "VIGIL_WEBHOOKS__JITTER": "0",
            "VIGIL_POLICIES": json.dumps({"breast_cancer": {
                "drift_signals": ["input_mean"], "cooldown_seconds": 3600}})})
        try:
            yield proc, srv, good, hang
        finally:
            stop_server(proc)


def retrain_events(rx: Receiver) -> list[dict[str, Any]]:
    out = []
    for r in rx.received:
        body = json.loads(r.body)
        if body.get("type") == "vigil.retrain.requested":
            out.append({"body": body, "headers": r.headers, "raw": r.body})
    return out


def deliveries(c: httpx.Client, srv: Server, status: str | None = None) -> list[dict[str, Any]]:
    params = {"status": status} if status else {}
    r = c.get("/admin/webhooks/deliveries", params=params, headers=srv.headers("viewer"))
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


def test_drift_fires_one_signed_webhook_and_the_cooldown_holds(setup: Any) -> None:
    _, srv, good, _hang = setup
    reference = pd.read_csv(DEMO / "breast_cancer" / "v1" / "reference.csv")
    rng = np.random.default_rng(5)
    j = list(reference.columns).index("mean texture")
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        send(c, reference.to_numpy()[rng.integers(0, len(reference), 600)])
        moved = reference.to_numpy()[rng.integers(0, len(reference), 600)].copy()
        moved[:, j] += reference["mean texture"].std()
        send(c, moved)
        events = wait_for(lambda: retrain_events(good), bool)
        assert len(events) == 1
        ev = events[0]
        assert Webhook(SECRET).verify(ev["raw"], ev["headers"])["type"] == \
            "vigil.retrain.requested"
        data = ev["body"]["data"]
        assert (data["model"], data["reason"], data["champion_version"]) == \
            ("breast_cancer", "drift", "v1")
        assert data["evidence"]["alarms"][0]["features"][0]["feature"] == "mean texture"
        assert len(data["lineage"]["dataset_sha256"]) == 64
        assert ev["headers"]["webhook-id"] == data["event_id"]

        # the hanging target times out and is retried, while /predict answers as usual
        row = reference.to_numpy()[0].tolist()
        codes = [c.post("/predict", json={"model": "breast_cancer", "instances": [row]}
                        ).status_code for _ in range(30)]
        assert codes == [200] * 30

        # a second alarm inside the cooldown: acknowledged, drifted again, no second webhook
        assert c.post("/admin/drift/breast_cancer/ack",
                      headers=srv.headers("operator")).status_code == 200
        send(c, moved)

        def second_alarm() -> bool:
            d = c.get("/admin/drift/breast_cancer", headers=srv.headers("viewer")).json()
            return any(a["signal"] == "input_mean" for a in d["active_alarms"])

        assert wait_for(second_alarm, bool)
        wait_for(lambda: None, lambda _: False, timeout=3)  # a few dispatcher rounds
        assert len(retrain_events(good)) == 1

        # the hanging target's delivery used its three attempts: a dead letter
        dead = wait_for(lambda: [d for d in deliveries(c, srv, "dead") if d["target"] == "hang"],
                        bool, timeout=30)
        assert dead[0]["attempts"] == 3
        assert all("no answer within 1 s" in h["error"] for h in dead[0]["history"])
        r = c.post(f"/admin/webhooks/deliveries/{dead[0]['id']}/redeliver",
                   headers=srv.headers("operator"))
        assert r.status_code == 200
        assert any(d["id"] == dead[0]["id"] and d["status"] in ("pending", "dead")
                   for d in deliveries(c, srv))
        assert c.post("/admin/webhooks/deliveries/999999/redeliver",
                      headers=srv.headers("operator")).status_code == 404


def test_a_test_event_is_signed_and_only_for_its_target(setup: Any) -> None:
    _, srv, good, hang = setup
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.post("/admin/webhooks/good/test",
                      headers=srv.headers("viewer")).status_code == 403
        r = c.post("/admin/webhooks/good/test", headers=srv.headers("operator"))
        assert r.status_code == 202
        event_id = r.json()["event_id"]
        assert c.post("/admin/webhooks/nope/test",
                      headers=srv.headers("operator")).status_code == 404

    def got() -> list[Any]:
        return [x for x in good.received if x.headers.get("webhook-id") == event_id]

    (req,) = wait_for(got, bool)
    assert Webhook(SECRET).verify(req.body, req.headers)["type"] == "vigil.test"
    assert not [x for x in hang.received if x.headers.get("webhook-id") == event_id]


def test_a_monitor_killed_after_the_outbox_write_still_delivers(setup: Any) -> None:
    proc, srv, good, _ = setup
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        (monitor,) = workers(proc.pid, "vigil-monitor")
        r = c.post("/admin/models/diabetes/retrain", headers=srv.headers("operator"))
        os.kill(monitor.pid, signal.SIGKILL)  # the event is in the outbox; maybe not sent
        assert r.status_code == 202
        event_id = r.json()["event_id"]

    def got() -> list[Any]:
        return [x for x in good.received if x.headers.get("webhook-id") == event_id]

    received = wait_for(got, bool, timeout=60)  # circus restarts the Monitor; it delivers
    assert received and {x.headers["webhook-id"] for x in received} == {event_id}
    body = json.loads(received[0].body)
    assert (body["data"]["reason"], body["data"]["model"]) == ("manual", "diabetes")
    assert wait_for(lambda: workers(proc.pid, "vigil-monitor"),
                    lambda ps: bool(ps) and ps[0].pid != monitor.pid)


def test_the_cli_lists_tests_and_redelivers(setup: Any) -> None:
    from typer.testing import CliRunner

    from service.cli import EXIT_NOT_FOUND, app
    from tests.e2e.conftest import TOKENS

    _, srv, good, _ = setup
    runner = CliRunner(env={"VIGIL_URL": srv.url, "VIGIL_TOKEN": TOKENS["operator"],
                            "COLUMNS": "200"})
    listed = runner.invoke(app, ["webhooks", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    items = json.loads(listed.stdout)["items"]
    assert {i["target"] for i in items} == {"good", "hang"}
    tested = runner.invoke(app, ["webhooks", "test", "good", "--json"])
    assert tested.exit_code == 0
    event_id = json.loads(tested.stdout)["event_id"]
    assert wait_for(lambda: [x for x in good.received
                             if x.headers.get("webhook-id") == event_id], bool)
    manual = runner.invoke(app, ["retrain", "breast_cancer"])
    assert manual.exit_code == 0 and "queued for good, hang" in manual.stdout
    assert runner.invoke(app, ["webhooks", "redeliver", "999999"]).exit_code == EXIT_NOT_FOUND
    assert runner.invoke(app, ["webhooks", "test", "nope"]).exit_code == EXIT_NOT_FOUND
