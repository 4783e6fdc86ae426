"""Open Inference Protocol v2 and KServe V1 against a real ``bentoml serve``, driven by a real
OIP client (``tritonclient[http]``), plus a property: /predict, /v2 infer and /v1 predict agree."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_breast_cancer
from tritonclient.utils import InferenceServerException

from tests.e2e.conftest import Server
from tests.e2e.test_monitoring import log_records, wait_for

pytestmark = pytest.mark.e2e
DATA = load_breast_cancer()
FEATURES = list(DATA.feature_names)


@pytest.fixture(scope="module")
def oip(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=server.url.removeprefix("http://"))


def matrix_input(x: np.ndarray, binary: bool = True) -> triton.InferInput:
    t = triton.InferInput("X", list(x.shape), "FP32")
    t.set_data_from_numpy(x.astype(np.float32), binary_data=binary)
    return t


def _diabetes_input() -> triton.InferInput:
    t = triton.InferInput("X", [1, 10], "FP32")
    t.set_data_from_numpy(np.full((1, 10), 0.02, dtype=np.float32))
    return t


def test_health_and_server_metadata(oip: triton.InferenceServerClient) -> None:
    assert oip.is_server_live() and oip.is_server_ready()
    meta = oip.get_server_metadata()
    assert meta["name"] == "vigil" and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_comes_from_the_card(oip: triton.InferenceServerClient) -> None:
    meta = oip.get_model_metadata("breast_cancer")
    assert meta["platform"] == "onnx_onnxv1" and "v1" in meta["versions"]
    assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 30]}]
    assert meta["outputs"] == [{"name": "label", "datatype": "INT64", "shape": [-1]},
                               {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}]
    assert oip.get_model_metadata("diabetes", "v1")["outputs"][0]["name"] == "variable"
    assert oip.is_model_ready("breast_cancer") and oip.is_model_ready("breast_cancer", "v3")
    assert not oip.is_model_ready("breast_cancer", "v9") and not oip.is_model_ready("nope")
    with pytest.raises(InferenceServerException, match="not found"):
        oip.get_model_metadata("nope")


def test_infer_binary_and_json_tensors_agree(oip: triton.InferenceServerClient) -> None:
    x = DATA.data[:5]
    binary = oip.infer("breast_cancer", [matrix_input(x)], model_version="v1", request_id="r-b")
    plain = oip.infer("breast_cancer", [matrix_input(x, binary=False)], model_version="v1",
                      outputs=[triton.InferRequestedOutput("label", binary_data=False),
                               triton.InferRequestedOutput("probabilities", binary_data=False)])
    for name in ("label", "probabilities"):
        np.testing.assert_array_equal(binary.as_numpy(name), plain.as_numpy(name))
    assert binary.as_numpy("probabilities").shape == (5, 2)
    response = binary.get_response()
    assert response["id"] == "r-b" and response["model_version"] == "v1"
    assert response["parameters"] == {"variant": "explicit", "request_id": "r-b"}


def test_oip_requests_are_logged_with_their_variant(oip: triton.InferenceServerClient,
                                                    server: Server) -> None:
    oip.infer("diabetes", [_diabetes_input()], model_version="v1", request_id="oip-logged-1")

    def logged() -> list[dict[str, Any]]:
        return [r["data"] for r in log_records(server.data_dir)
                if r["data"].get("request_id") == "oip-logged-1"]

    records = wait_for(logged, bool, timeout=20)
    assert [(r["version"], r["variant"]) for r in records] == [("v1", "explicit")]
    assert records[0]["inputs"][0]["age"] == pytest.approx(0.02)


def test_infer_with_one_named_tensor_per_feature(oip: triton.InferenceServerClient) -> None:
    x = DATA.data[10:14]
    inputs = []
    for j, name in enumerate(FEATURES):
        t = triton.InferInput(name, [4, 1] if j % 2 else [4], "FP64")
        col = x[:, j].reshape(4, 1) if j % 2 else x[:, j]
        t.set_data_from_numpy(col)
        inputs.append(t)
    named = oip.infer("breast_cancer", inputs, model_version="v2")
    positional = oip.infer("breast_cancer", [matrix_input(x)], model_version="v2")
    np.testing.assert_allclose(named.as_numpy("probabilities"),
                               positional.as_numpy("probabilities"), rtol=1e-6)


def test_output_selection_and_id_echo(oip: triton.InferenceServerClient) -> None:
    r = oip.infer("breast_cancer", [matrix_input(DATA.data[:2])], request_id="my-id-7",
                  outputs=[triton.InferRequestedOutput("probabilities")])
    response = r.get_response()
    assert [o["name"] for o in response["outputs"]] == ["probabilities"]
    assert response["id"] == "my-id-7" and r.as_numpy("label") is None


def test_the_split_is_sticky_by_routing_key(oip: triton.InferenceServerClient,
                                            server: Server) -> None:
    x = DATA.data[:1]
    seen = {}
    for key in (f"user-{i}" for i in range(40)):
        versions = {oip.infer("breast_cancer", [matrix_input(x)],
                              parameters={"routing_key": key}).get_response()["model_version"]
                    for _ in range(2)}
        assert len(versions) == 1  # one key stays on one version
        seen[key] = versions.pop()
    deployment = httpx.get(f"{server.url}/admin/deployments/breast_cancer",
                           headers=server.headers("viewer")).json()
    allowed = {deployment["champion"]["version"]} | (
        {deployment["canary"]["version"]} if deployment.get("canary") else set())
    assert set(seen.values()) <= allowed


def test_explicit_version_outside_the_deployment_is_404(
        oip: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        oip.infer("breast_cancer", [matrix_input(DATA.data[:1])], model_version="v9")
    assert info.value.status() == "404"


@pytest.mark.parametrize(("tensor", "field"), [
    ({"name": "X", "shape": [1, 29], "datatype": "FP32", "data": [0.0] * 29}, "inputs[0].shape"),
    ({"name": "X", "shape": [1, 30], "datatype": "FP32", "data": [0.0] * 12}, "inputs[0].data"),
    ({"name": "Y", "shape": [1, 30], "datatype": "FP32", "data": [0.0] * 30}, "inputs[0].name"),
    ({"name": "X", "shape": [1, 30], "datatype": "BYTES", "data": ["a"] * 30},
     "inputs[0].datatype"),
])
def test_client_mistakes_are_422_with_the_field(server: Server, tensor: dict[str, Any],
                                                field: str) -> None:
    r = httpx.post(f"{server.url}/v2/models/breast_cancer/infer", json={"inputs": [tensor]})
    assert r.status_code == 422
    assert r.json()["field"] == field and r.json()["error"]


def test_protocol_errors(server: Server) -> None:
    url = server.url
    assert httpx.post(f"{url}/v2/models/nope/infer", json={"inputs": []}).status_code == 404
    r = httpx.post(f"{url}/v2/models/breast_cancer/infer", content=b"{not json")
    assert (r.status_code, r.json()["field"]) == (422, "body")
    big = {"inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP32",
                       "data": [0.0] * 30}], "id": "x" * 5_000_000}
    assert httpx.post(f"{url}/v2/models/breast_cancer/infer", json=big).status_code == 413
    r = httpx.post(f"{url}/v1/models/diabetes:predict", json={"instances": [[1.0, 2.0]]})
    assert r.status_code == 422 and r.json()["field"] == "instances[0]"
    assert httpx.get(f"{url}/v1/models/nope").status_code == 404
    assert httpx.get(f"{url}/v1/models/diabetes").json() == {"name": "diabetes", "ready": True}


def test_routes_are_in_the_openapi_document(server: Server) -> None:
    paths = httpx.get(f"{server.url}/docs.json").json()["paths"]
    for path in ("/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/{model}",
                 "/v2/models/{model}/ready", "/v2/models/{model}/infer",
                 "/v2/models/{model}/versions/{version}",
                 "/v2/models/{model}/versions/{version}/ready",
                 "/v2/models/{model}/versions/{version}/infer",
                 "/v1/models/{model}", "/v1/models/{model}:predict"):
        assert path in paths, path
    assert "requestBody" in paths["/v2/models/{model}/infer"]["post"]


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, len(DATA.target) - 1), n=st.integers(1, 4),
       scale=st.floats(0.5, 2.0), key=st.text("abcdef0123456789", min_size=1, max_size=12))
def test_every_protocol_gives_the_same_predictions(server: Server, index: int, n: int,
                                                   scale: float, key: str) -> None:
    x = (DATA.data[index:index + n] * scale).round(6)
    rows = x.tolist()
    headers = {"X-Routing-Key": key}
    with httpx.Client(base_url=server.url, timeout=30) as c:
        native = c.post("/predict", json={"model": "breast_cancer", "instances": rows},
                        headers=headers).json()
        v2 = c.post("/v2/models/breast_cancer/infer", headers=headers, json={
            "inputs": [{"name": "X", "shape": list(x.shape), "datatype": "FP64",
                        "data": rows}]}).json()
        v1 = c.post("/v1/models/breast_cancer:predict", headers=headers,
                    json={"instances": [dict(zip(FEATURES, r, strict=True)) for r in rows]})
    assert native["version"] == v2["model_version"] == v1.headers["x-vigil-version"]
    assert v1.json()["predictions"] == native["predictions"]
    outs = {o["name"]: o for o in v2["outputs"]}
    assert outs["label"]["data"] == [p["label_index"] for p in native["predictions"]]
    probs = np.array(outs["probabilities"]["data"]).reshape(len(rows), 2)
    expected = [[p["probabilities"][c] for c in ("malignant", "benign")]
                for p in native["predictions"]]
    np.testing.assert_array_equal(probs, expected)
