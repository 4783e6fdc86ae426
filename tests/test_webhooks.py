"""Webhook delivery against real HTTP receivers on 127.0.0.1, with an injected clock: retry
schedule, Retry-After, 410, redirects, timeouts, resets, signatures, dead letters, redelivery,
the outbox surviving a crash, and each template's documented request shape."""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook

from monitoring.retrain.policy import Observation, Policy, evaluate
from monitoring.retrain.webhooks import (
    DEFAULT_SCHEDULE,
    Dispatcher,
    Target,
    enqueue,
    targets_from_config,
    url_problem,
)
from store import Outbox, transaction
from tests.receivers import receiver

SECRET = "whsec_" + base64.b64encode(b"a" * 32).decode()
SECRET2 = "whsec_" + base64.b64encode(b"b" * 32).decode()
EVENT = {"type": "vigil.retrain.requested", "timestamp": "2026-11-28T00:00:00Z",
         "data": {"event_id": "ev-1", "model": "m", "champion_version": "v1",
                  "lineage": {"dataset_sha256": "d" * 64, "code_commit": "abc"},
                  "reason": "drift", "evidence": {}, "gateway": "http://127.0.0.1:3000"}}


class Clock:
    """Starts at the real time (receivers check the signature's timestamp), then moves only
    when a test moves it."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


def setup(engine: sa.Engine, target: Target, clock: Clock, **kw: Any) -> Dispatcher:
    with transaction(engine) as tx:
        assert enqueue(tx, EVENT, "ev-1", [target], clock(), "m", "drift")
    return Dispatcher(engine, [target], clock=clock, jitter=0.0, allow_link_local=False, **kw)


def delivery(engine: sa.Engine) -> dict[str, Any]:
    return Outbox(engine).deliveries()[0]


def test_delivered_with_standard_webhooks_headers(engine: sa.Engine) -> None:
    clock = Clock()
    with receiver() as rx:
        d = setup(engine, Target("t", "generic", rx.url + "/hook", secrets=(SECRET, SECRET2)),
                  clock)
        assert [o.status for o in d.run_due()] == ["delivered"]
        req = rx.received[0]
    assert req.headers["webhook-id"] == "ev-1"
    assert req.headers["webhook-timestamp"] == str(int(clock()))
    assert len(req.headers["webhook-signature"].split()) == 2  # both secrets, during rotation
    for secret in (SECRET, SECRET2):
        assert Webhook(secret).verify(req.body, req.headers) == EVENT  # the real library
    assert json.loads(req.body) == EVENT
    assert delivery(engine)["status"] == "delivered"


def test_failures_follow_the_schedule_with_the_same_webhook_id(engine: sa.Engine) -> None:
    clock = Clock()
    with receiver([(500, {}), "reset", (200, {})]) as rx:
        d = setup(engine, Target("t", "generic", rx.url), clock)
        assert [o.status for o in d.run_due()] == ["retry"]
        assert delivery(engine)["next_attempt_at"] == clock() + DEFAULT_SCHEDULE[1]
        clock.now += DEFAULT_SCHEDULE[1] - 1
        assert d.run_due() == []  # not due yet
        clock.now += 1
        assert [o.status for o in d.run_due()] == ["retry"]  # connection reset
        assert delivery(engine)["next_attempt_at"] == clock() + DEFAULT_SCHEDULE[2]
        clock.now += DEFAULT_SCHEDULE[2]
        assert [o.status for o in d.run_due()] == ["delivered"]
        ids = {r.headers["webhook-id"] for r in rx.received}
    assert ids == {"ev-1"} and len(rx.received) == 3
    history = delivery(engine)["history"]
    assert [h["status_code"] for h in history] == [500, None, 200]
    assert history[1]["error"].startswith(("RemoteProtocolError", "ReadError",
                                           "ConnectError"))


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(engine: sa.Engine, status: int) -> None:
    clock = Clock()
    with receiver([(status, {"Retry-After": "120"}), (200, {})]) as rx:
        d = setup(engine, Target("t", "generic", rx.url), clock)
        d.run_due()
        assert delivery(engine)["next_attempt_at"] == clock() + 120  # not the schedule's 5 s
        clock.now += 119
        assert d.run_due() == []
        clock.now += 1
        assert [o.status for o in d.run_due()] == ["delivered"]


def test_gone_disables_the_target(engine: sa.Engine) -> None:
    clock = Clock()
    with receiver([(410, {})]) as rx:
        target = Target("t", "generic", rx.url)
        d = setup(engine, target, clock)
        assert [(o.status, o.status_code) for o in d.run_due()] == [("disabled", 410)]
        with transaction(engine) as tx:
            enqueue(tx, {**EVENT}, "ev-2", [target], clock(), "m", "drift")
        assert [o.status for o in d.run_due()] == ["dead"]  # not sent: the target is gone
        assert len(rx.received) == 1


def test_redirects_are_not_followed(engine: sa.Engine) -> None:
    clock = Clock()
    with receiver([(301, {"Location": "/elsewhere"})]) as rx:
        d = setup(engine, Target("t", "generic", rx.url + "/hook"), clock)
        assert [(o.status, o.status_code) for o in d.run_due()] == [("retry", 301)]
        assert [r.path for r in rx.received] == ["/hook"]


def test_a_hanging_target_times_out(engine: sa.Engine) -> None:
    clock = Clock()
    with receiver(["hang:3"]) as rx:
        d = setup(engine, Target("t", "generic", rx.url), clock, timeout=0.5)
        outcome = d.run_due()[0]
        assert outcome.status == "retry" and "no answer within 0.5 s" in (outcome.error or "")


def test_dead_letter_after_the_last_attempt_then_redelivery(engine: sa.Engine) -> None:
    clock = Clock()
    schedule = (0, 10, 20)
    with receiver([(500, {}), (500, {}), (500, {}), (200, {})]) as rx:
        d = setup(engine, Target("t", "generic", rx.url), clock, schedule=schedule)
        for wait in (0, 10, 20):
            clock.now += wait
            d.run_due()
        dead = Outbox(engine).deliveries("dead")
        assert len(dead) == 1 and dead[0]["attempts"] == 3 and len(rx.received) == 3
        assert Outbox(engine).redeliver(dead[0]["id"], clock())
        assert [o.status for o in d.run_due()] == ["delivered"]
        assert len({r.headers["webhook-id"] for r in rx.received}) == 1


def test_the_outbox_survives_a_crash_before_and_after_sending(engine: sa.Engine,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    clock = Clock()
    with receiver() as rx:
        target = Target("t", "generic", rx.url)
        setup(engine, target, clock)  # the event is in the outbox; this process dies here
        # after sending but before recording: the attempt's write fails, as a kill would
        crashing = Dispatcher(engine, [target], clock=clock, jitter=0.0)
        real_begin = engine.begin
        monkeypatch.setattr(engine, "begin", lambda: (_ for _ in ()).throw(
            RuntimeError("killed")))
        with pytest.raises(RuntimeError):
            crashing.run_due()
        monkeypatch.setattr(engine, "begin", real_begin)
        restarted = Dispatcher(engine, [target], clock=clock, jitter=0.0)
        assert [o.status for o in restarted.run_due()] == ["delivered"]
    # at least once: twice here, with the same id the receiver deduplicates on
    assert [r.headers["webhook-id"] for r in rx.received] == ["ev-1", "ev-1"]


def test_an_event_id_is_written_once(engine: sa.Engine) -> None:
    with transaction(engine) as tx:
        assert enqueue(tx, EVENT, "ev-1", [Target("t", "generic", "http://127.0.0.1:9")],
                       1.0, "m", "drift")
        assert not enqueue(tx, EVENT, "ev-1", [Target("t", "generic", "http://127.0.0.1:9")],
                           2.0, "m", "drift")
    assert len(Outbox(engine).deliveries()) == 1


# ----------------------------------------------------------------------------- templates


def test_airflow2_dag_run(engine: sa.Engine) -> None:
    with receiver([(409, {})]) as rx:
        target = Target("af", "airflow2", rx.url, options={"dag_id": "retrain"},
                        credentials={"username": "u", "password": "p"})
        outcome = setup(engine, target, Clock()).run_due()[0]
        req = rx.received[0]
    assert outcome.status == "delivered"  # 409: this dag_run_id already exists
    assert req.path == "/api/v1/dags/retrain/dagRuns"
    assert json.loads(req.body) == {"dag_run_id": "ev-1", "conf": EVENT}
    assert req.headers["authorization"] == "Basic " + base64.b64encode(b"u:p").decode()


def test_airflow3_fetches_and_refreshes_its_token(engine: sa.Engine) -> None:
    token = (200, {"Content-Type": "application/json"}, b'{"access_token": "jwt-1"}')
    token2 = (200, {"Content-Type": "application/json"}, b'{"access_token": "jwt-2"}')
    with receiver([token, (401, {}), token2, (200, {})]) as rx:
        target = Target("af3", "airflow3", rx.url, options={"dag_id": "retrain"},
                        credentials={"username": "u", "password": "p"})
        assert setup(engine, target, Clock()).run_due()[0].status == "delivered"
    paths = [r.path for r in rx.received]
    assert paths == ["/auth/token", "/api/v2/dags/retrain/dagRuns", "/auth/token",
                     "/api/v2/dags/retrain/dagRuns"]
    assert json.loads(rx.received[0].body) == {"username": "u", "password": "p"}
    assert rx.received[3].headers["authorization"] == "Bearer jwt-2"
    assert json.loads(rx.received[3].body) == {"dag_run_id": "ev-1", "logical_date": None,
                                               "conf": EVENT}


def test_github_repository_dispatch_and_workflow_dispatch(engine: sa.Engine) -> None:
    with receiver([(204, {})]) as rx:
        target = Target("gh", "github_dispatch", rx.url, options={
            "repository": "acme/models", "event_type": "retrain"}, credentials={"token": "t"})
        assert setup(engine, target, Clock()).run_due()[0].status == "delivered"
        req = rx.received[0]
    body = json.loads(req.body)
    assert req.path == "/repos/acme/models/dispatches"
    assert body["event_type"] == "retrain" and len(body["client_payload"]) <= 10
    assert body["client_payload"]["event_id"] == "ev-1"
    assert req.headers["accept"] == "application/vnd.github+json"
    assert req.headers["x-github-api-version"] == "2022-11-28"
    assert req.headers["authorization"] == "Bearer t"


def test_github_workflow_dispatch_inputs_are_strings(engine: sa.Engine) -> None:
    with receiver([(204, {})]) as rx:
        target = Target("wf", "github_workflow", rx.url, options={
            "repository": "acme/models", "workflow": "retrain.yml", "ref": "main"},
            credentials={"token": "t"})
        setup(engine, target, Clock()).run_due()
        req = rx.received[0]
    body = json.loads(req.body)
    assert req.path == "/repos/acme/models/actions/workflows/retrain.yml/dispatches"
    assert body["ref"] == "main" and all(isinstance(v, str) for v in body["inputs"].values())
    assert body["inputs"]["model"] == "m" and len(body["inputs"]) <= 10


def test_prefect_flow_run_is_idempotent_by_event_id(engine: sa.Engine) -> None:
    with receiver([(201, {})]) as rx:
        target = Target("pf", "prefect", rx.url + "/api", options={"deployment_id": "dep-1"})
        setup(engine, target, Clock()).run_due()
        req = rx.received[0]
    assert req.path == "/api/deployments/dep-1/create_flow_run"
    assert orjson.loads(req.body) == {"parameters": {"event": EVENT}, "idempotency_key": "ev-1"}


def test_target_config_takes_secrets_from_the_environment_and_refuses_bad_urls() -> None:
    env = {"S": f"{SECRET} {SECRET2}", "GH": "token-1"}
    (t,) = targets_from_config([{"name": "gh", "type": "github_dispatch",
                                 "url": "https://api.github.com", "repository": "a/b",
                                 "secret_env": "S", "token_env": "GH"}], environ=env)
    assert t.secrets == (SECRET, SECRET2) and t.credentials == {"token": "token-1"}
    assert "token-1" not in repr(t)
    for bad, why in (("file:///etc/passwd", "scheme"),
                     ("http://169.254.169.254/latest/meta-data", "link-local"),
                     ("http://[fe80::1]/x", "link-local")):
        with pytest.raises(ValueError, match=why):
            targets_from_config([{"name": "x", "type": "generic", "url": bad}], environ={})
    assert url_problem("http://169.254.169.254/", allow_link_local=True) is None
    assert url_problem("http://127.0.0.1:8080/hook") is None
    with pytest.raises(ValueError, match="dag_id"):
        targets_from_config([{"name": "a", "type": "airflow2", "url": "http://x"}], environ={})
    assert os.environ.get("S") is None  # nothing leaked into the process environment


# ----------------------------------------------------------------------------- policy


def obs(now: float, alarms: list[dict[str, Any]] | None = None,
        quality: dict[str, Any] | None = None) -> Observation:
    return Observation("m", now, "v1", 1_000.0, alarms or [], quality or {})


def test_a_drift_alarm_fires_once_then_the_cooldown_holds() -> None:
    policy = Policy("m", drift_signals=("input_mean",), hold_seconds=60, cooldown_seconds=3600)
    state: dict[str, Any] = {}
    alarm = {"id": 7, "signal": "input_mean", "features": [{"feature": "x"}]}
    assert evaluate(policy, obs(10_000, [alarm]), state) == []  # must hold for 60 s
    (f,) = evaluate(policy, obs(10_060, [alarm]), state)
    assert (f.reason, f.event_id) == ("drift", "retrain-m-drift-7")
    again = {"id": 8, "signal": "input_mean", "features": []}
    assert evaluate(policy, obs(10_200, [again]), state) == []  # inside the cooldown
    assert evaluate(policy, obs(10_000 + 3700, [again]), state)[0].event_id == \
        "retrain-m-drift-8"
    other = {"id": 9, "signal": "error", "features": []}
    assert evaluate(Policy("m", drift_signals=("input_mean",)), obs(1e9, [other]), {}) == []


def test_quality_needs_enough_labels_and_the_same_facts_give_the_same_id() -> None:
    policy = Policy("m", quality_metric="accuracy", quality_threshold=0.9, min_labels=100)
    assert evaluate(policy, obs(5_000, quality={"accuracy": 0.5, "labels": 99}), {}) == []
    s1: dict[str, Any] = {}
    s2: dict[str, Any] = {}
    a = evaluate(policy, obs(5_000, quality={"accuracy": 0.8, "labels": 100}), s1)
    b = evaluate(policy, obs(5_000, quality={"accuracy": 0.8, "labels": 100}), s2)
    assert a and a[0].event_id == b[0].event_id  # a replay after a crash dedups in the outbox
    loss = Policy("m", quality_metric="log_loss", quality_threshold=0.5, min_labels=1)
    assert evaluate(loss, obs(1, quality={"log_loss": 0.7, "labels": 5}), {})


def test_schedule_counts_from_the_champion_or_the_last_trigger() -> None:
    policy = Policy("m", schedule_days=1, cooldown_seconds=0)
    state: dict[str, Any] = {}
    assert evaluate(policy, obs(1_000 + 86_399), state) == []
    (f,) = evaluate(policy, obs(1_000 + 86_400), state)
    assert f.reason == "schedule" and f.event_id == "retrain-m-schedule-v1-1"
    assert evaluate(policy, obs(1_000 + 86_400 + 100), state) == []


def test_triggers_write_the_event_and_the_policy_state_in_one_transaction(
        engine: sa.Engine) -> None:
    """An open drift alarm of the champion fires once: the event and its delivery are in the
    outbox, the policy state says it fired, and the next tick (in the cooldown) adds none."""
    from monitoring.retrain.triggers import Triggers
    from store import DriftStore, PolicyStateStore, reading

    with transaction(engine) as tx:
        DriftStore(engine).add_alarm(tx, "m", "v1", "input_mean",
                                     {"signal": "input_mean", "version": "v1"}, 1.0)
    triggers = Triggers(engine, {"m": Policy("m", drift_signals=("input_mean",))},
                        [Target("t", "generic", "http://127.0.0.1:9")],
                        lambda model: ("v1", 0.0, {"code_commit": "abc"}), "http://gw")
    [event_id] = triggers.evaluate({}, 10.0)
    assert event_id.startswith("retrain-m-drift-")
    assert triggers.evaluate({}, 20.0) == []
    [d] = Outbox(engine).deliveries()
    assert (d["event_id"], d["target"], d["reason"]) == (event_id, "t", "drift")
    with reading(engine) as tx:
        assert PolicyStateStore().get(tx)["m"]["drift"]["last_fired"] == 10.0


def test_two_dispatchers_never_send_the_same_attempt(engine: sa.Engine) -> None:
    """Several replicas each run a dispatcher on the one outbox: with claims, every
    delivery reaches the receiver once, whichever dispatcher sent it."""
    import threading

    with receiver(["hang:0.05"]) as rx:
        target = Target("t", "generic", rx.url + "/hook")
        with transaction(engine) as tx:
            for i in range(20):
                assert enqueue(tx, {**EVENT, "data": {**EVENT["data"], "event_id": f"ev-{i}"}},
                               f"ev-{i}", [target], time.time(), "m", "drift")
        dispatchers = [Dispatcher(engine, [target], jitter=0.0, claim=True) for _ in range(2)]
        sent: list[int] = []
        threads = [threading.Thread(target=lambda d=d: sent.append(len(d.run_due())))
                   for d in dispatchers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ids = sorted(r.headers["webhook-id"] for r in rx.received)
    assert ids == sorted(f"ev-{i}" for i in range(20)), "each delivery once"
    assert sum(sent) == 20
    assert all(d["status"] == "delivered" for d in Outbox(engine).deliveries(limit=100))
    for d in dispatchers:
        d.close()
