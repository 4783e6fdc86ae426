"""The admin app from its factory, on a demo store, without a server: the error statuses the
OpenAPI document promises (unknown query parameters, nothing to promote or roll back) and the
schema it documents for bodies."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.openapi.utils import get_openapi
from starlette.testclient import TestClient

from service.admin.app import create_app
from service.context import build_context
from service.settings import load_settings

TOKEN = "admin-api-operator"
H = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, registry: Any) -> Iterator[TestClient]:
    from models.deployment import Canary, Deployment
    from store import DeploymentStore, make_engine, migrate

    data: Path = tmp_path_factory.mktemp("admin-api")
    settings = load_settings(data_dir=data, auth={"tokens": [
        {"name": "ops", "role": "operator",
         "sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]},
        kpis={"breast_cancer": [{"name": "conversion", "kind": "binary"}]})
    engine = make_engine(settings.store_url)
    migrate(engine)
    store = DeploymentStore(engine)
    store.create(Deployment(model="breast_cancer", champion="v1", canary=Canary("v2", 0.1)))
    store.create(Deployment(model="diabetes", champion="v1"))
    engine.dispose()
    ctx = build_context(settings)
    ctx.live.refresh()
    with TestClient(create_app(ctx)) as c:
        yield c
    ctx.engine.dispose()


@pytest.mark.parametrize(("method", "url"), [
    ("GET", "/audit?limit=5&bogus=1"),
    ("GET", "/webhooks/deliveries?bogus=1"),
    ("POST", "/drift/diabetes/rebaseline?rows=100&bogus=1"),
    ("GET", "/deployments?bogus=1"),
])
def test_an_unknown_query_parameter_is_refused_naming_it(client: TestClient, method: str,
                                                         url: str) -> None:
    r = client.request(method, url, headers=H)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "bogus" and "not a query parameter" in r.json()["reason"]
    # the token is checked first: an anonymous caller learns nothing about the route
    assert client.request(method, url).status_code == 401


def test_declared_query_parameters_still_work(client: TestClient) -> None:
    r = client.get("/audit?limit=1&action=deployments.patch", headers=H)
    assert r.status_code == 200


def test_promote_or_rollback_with_nothing_to_act_on_is_a_conflict(client: TestClient) -> None:
    r = client.post("/deployments/diabetes/promote", headers=H)
    assert r.status_code == 409 and r.json()["field"] == "canary"
    r = client.post("/deployments/diabetes/rollback", headers=H)
    assert r.status_code == 409 and r.json()["field"] == "history"
    # a well-formed change that conflicts with nothing still works, and is audited once
    rev = client.get("/deployments/breast_cancer", headers=H).json()["revision"]
    r = client.post("/deployments/breast_cancer/promote", headers={**H, "If-Match": str(rev)})
    assert r.status_code == 200 and r.json()["champion"] == {"version": "v2"}
    rows = client.get("/audit?action=deployments.promote", headers=H).json()["items"]
    done = [i for i in rows if i["target"] == "deployments/breast_cancer"]
    assert [(i["outcome"], i["before"]["revision"], i["after"]["revision"]) for i in done] == \
        [("ok", rev, rev + 1)]
    # the refused promote is in the audit too, with the reason, as every refused change is
    refused = [i for i in rows if i["target"] == "deployments/diabetes"]
    assert [(i["outcome"], i["after"]) for i in refused] == [("rejected", None)]
    assert "no canary" in refused[0]["detail"]


def test_a_stale_if_match_is_412_and_audited_as_rejected(client: TestClient) -> None:
    r = client.patch("/deployments/diabetes", json={"routing_key_header": "X-User"},
                     headers={**H, "If-Match": "999"})
    assert r.status_code == 412 and r.json()["field"] == "If-Match"
    rows = client.get("/audit?action=deployments.patch&limit=1", headers=H).json()["items"]
    assert rows[0]["outcome"] == "rejected" and "stale" in rows[0]["detail"]


def test_an_unregistered_canary_is_refused_before_anything_is_written(
        client: TestClient) -> None:
    d = client.get("/deployments/diabetes", headers=H).json()
    r = client.patch("/deployments/diabetes", json={"canary": {"version": "v9", "weight": .5}},
                     headers={**H, "If-Match": str(d["revision"])})
    assert r.status_code == 422 and r.json()["field"] == "canary.version"
    assert client.get("/deployments/diabetes", headers=H).json()["revision"] == d["revision"]


def test_the_schema_says_what_the_server_enforces(client: TestClient) -> None:
    app = client.app
    doc = get_openapi(title="t", version="0", routes=app.routes)  # type: ignore[attr-defined]
    patch = doc["paths"]["/deployments/{model}"]["patch"]["requestBody"]["content"]
    schema = patch["application/merge-patch+json"]["schema"]
    assert schema["additionalProperties"] is False and "champion" not in schema["properties"]
    assert patch["application/json"]["schema"] == schema
    rollout = doc["paths"]["/rollouts/{model}"]["post"]["requestBody"]["content"]
    steps = rollout["application/json"]["schema"]["properties"]["steps"]
    assert steps["items"] == {"type": "number", "exclusiveMinimum": 0, "maximum": 1}
    assert steps["contains"] == {"const": 1.0}
    body = doc["paths"]["/models/{model}/versions"]["post"]["requestBody"]["content"]
    ref = body["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
    card = doc["components"]["schemas"][ref]["properties"]["card"]
    assert card["contentMediaType"] == "application/json"
    assert "inputs" in card["contentSchema"]["required"]
    for action in ("promote", "rollback"):
        assert "409" in doc["paths"][f"/deployments/{{model}}/{action}"]["post"]["responses"]


def test_rollout_and_experiment_actions_audit_the_request_id(client: TestClient) -> None:
    """Like every admin change, an operator's rollout and experiment commands carry the
    caller's X-Request-ID into their audit rows."""
    champion = client.get("/deployments/breast_cancer", headers=H).json()["champion"]["version"]

    def call(path: str, rid: str, body: Any = None) -> None:
        r = client.post(path, json=body, headers={**H, "X-Request-ID": rid})
        assert r.status_code in (200, 201), r.text

    call("/rollouts/breast_cancer", "rid-rollout-start", {"candidate": "v3"})
    for command in ("pause", "resume", "abort"):
        call(f"/rollouts/breast_cancer/{command}", f"rid-rollout-{command}")
    call("/experiments/breast_cancer", "rid-experiment-start", {
        "arms": {champion: 0.5, "v3": 0.5}, "primary": "conversion", "min_effect": 0.1})
    call("/experiments/breast_cancer/stop", "rid-experiment-stop")
    rows = client.get("/audit?limit=50", headers=H).json()["items"]
    ids = {(i["action"], i["request_id"]) for i in rows if i["actor"] == "ops"}
    assert {("rollout.start", "rid-rollout-start"), ("rollout.pause", "rid-rollout-pause"),
            ("rollout.weight", "rid-rollout-resume"), ("rollout.abort", "rid-rollout-abort"),
            ("experiment.start", "rid-experiment-start"),
            ("experiment.stop", "rid-experiment-stop"),
            ("experiment.concluded", "rid-experiment-stop")} <= ids
