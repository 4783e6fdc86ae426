"""The Gateway as an ASGI app in this process (``Service.to_asgi()`` + TestClient), here with
``auth.inference: required``: the middle of the three test levels."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import DEMO, asgi_gateway

CLIENT, OPERATOR = "asgi-client-token", "asgi-operator-token"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, registry: Any) -> Iterator[TestClient]:
    with asgi_gateway(tmp_path_factory.mktemp("asgi"), {
        "VIGIL_AUTH__INFERENCE": "required",
        "VIGIL_AUTH__TOKENS": json.dumps([
            {"name": "app", "role": "client", "sha256": hashlib.sha256(CLIENT.encode())
             .hexdigest()},
            {"name": "ops", "role": "operator", "sha256": hashlib.sha256(OPERATOR.encode())
             .hexdigest()}]),
    }) as c:
        yield c


def _row() -> list[float]:
    text = (DEMO / "diabetes" / "v1" / "reference.csv").read_text().splitlines()[1]
    return [float(v) for v in text.split(",")]


def test_inference_requires_a_client_token_when_configured(client: TestClient) -> None:
    body = {"model": "diabetes", "instances": [_row()]}
    r = client.post("/predict", json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = client.post("/predict", json=body, headers={"Authorization": f"Bearer {CLIENT}"})
    assert r.status_code == 200 and r.json()["version"] == "v1"


def test_a_client_token_cannot_use_the_admin_api(client: TestClient) -> None:
    r = client.get("/admin/deployments/diabetes", headers={"Authorization": f"Bearer {CLIENT}"})
    assert r.status_code == 403
    r = client.get("/admin/deployments/diabetes",
                   headers={"Authorization": f"Bearer {OPERATOR}"})
    assert r.status_code == 200 and r.json()["champion"] == {"version": "v1"}


def test_a_patch_is_served_at_once_by_the_worker_that_made_it(client: TestClient) -> None:
    h = {"Authorization": f"Bearer {OPERATOR}"}
    rev = client.get("/admin/deployments/breast_cancer", headers=h).json()["revision"]
    r = client.patch("/admin/deployments/breast_cancer", json={"canary": {"weight": 1.0}},
                     headers={**h, "If-Match": str(rev)})
    assert r.status_code == 200
    names = [f["name"] for f in json.loads(
        (DEMO / "breast_cancer" / "v1" / "card.json").read_text())["inputs"]]
    row = (DEMO / "breast_cancer" / "v1" / "reference.csv").read_text().splitlines()[1]
    record = dict(zip(names, map(float, row.split(",")), strict=True))
    p = client.post("/predict", json={"model": "breast_cancer", "inputs": [record]},
                    headers={"Authorization": f"Bearer {CLIENT}"})
    assert p.json()["variant"] == "canary" and p.headers["x-vigil-revision"] == str(rev + 1)


def test_protocol_routes_need_a_client_token_too(client: TestClient) -> None:
    body = {"inputs": [{"name": "X", "shape": [1, 10], "datatype": "FP64", "data": [_row()]}]}
    r = client.post("/v2/models/diabetes/infer", json=body)
    assert r.status_code == 401 and r.json()["error"]
    r = client.post("/v2/models/diabetes/infer", json=body,
                    headers={"Authorization": f"Bearer {CLIENT}"})
    assert r.status_code == 200 and r.json()["model_version"] == "v1"
    r = client.post("/v1/models/diabetes:predict", json={"instances": [_row()]})
    assert r.status_code == 401
    assert client.get("/v2/health/live").status_code == 200  # probes stay open


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", "/v2/models/breast_cancer/infer", "POST"),
    ("GET", "/v1/models/breast_cancer:predict", "POST"),
    ("DELETE", "/v2/models/breast_cancer", "GET"),
])
def test_a_wrong_method_gets_405_naming_the_allowed_ones(client: TestClient, method: str,
                                                         path: str, allow: str) -> None:
    r = client.request(method, path)
    assert r.status_code == 405 and r.headers["allow"] == allow, r.headers
    assert r.json()["field"] == "method" and allow in r.json()["error"]


def test_the_inference_posts_take_the_fast_path_inside_admission_control(
        client: TestClient) -> None:
    """The wiring test_fastpath cannot see: the Gateway installs FastRoutes inside
    AdmissionMiddleware (limits still apply) with /predict and the protocol routes."""
    from service.fastpath import FastRoutes
    from service.gateway import Gateway
    from service.limits import AdmissionMiddleware

    classes = [cls for cls, _ in Gateway.middlewares]
    admission = next(i for i, cls in enumerate(classes) if issubclass(cls, AdmissionMiddleware))
    assert admission < classes.index(FastRoutes)  # first is outer
    options = dict(Gateway.middlewares)[FastRoutes]
    paths = ["/predict", "/v2/models/breast_cancer/infer",
             "/v2/models/breast_cancer/versions/v2/infer", "/v1/models/breast_cancer:predict"]
    for path in paths:
        assert path.startswith(options["prefixes"])
        assert any(p.fullmatch(path) for p, _ in options["routes"]), path
    assert options["context"]() is not None  # the worker's context, once it is built
