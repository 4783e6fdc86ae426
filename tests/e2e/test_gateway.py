"""End to end against a real 2-worker ``bentoml serve`` with the demo deployment."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.routing import route
from store import DeploymentStore, make_engine
from tests.conftest import DEMO
from tests.e2e.conftest import POLL_SECONDS, Server

pytestmark = pytest.mark.e2e
FEATURES = [f["name"] for f in json.loads(
    (DEMO / "breast_cancer" / "v1" / "card.json").read_text())["inputs"]]
ROW = [float(v) for v in (DEMO / "breast_cancer" / "v1" / "reference.csv")
       .read_text().splitlines()[1].split(",")]


def body(key: str | None = None, rows: int = 1) -> dict[str, Any]:
    b: dict[str, Any] = {"model": "breast_cancer",
                         "inputs": [dict(zip(FEATURES, ROW, strict=True))] * rows}
    if key is not None:
        b["routing_key"] = key
    return b


def deployment(client: httpx.Client, server: Server) -> dict[str, Any]:
    r = client.get("/admin/deployments/breast_cancer", headers=server.headers("viewer"))
    assert r.status_code == 200
    assert r.headers["etag"] == f'"{r.json()["revision"]}"'
    return r.json()  # type: ignore[no-any-return]


def patch(client: httpx.Client, server: Server, doc: dict[str, Any],
          revision: int | None = None) -> httpx.Response:
    rev = deployment(client, server)["revision"] if revision is None else revision
    return client.patch("/admin/deployments/breast_cancer", json=doc,
                        headers={**server.headers("operator"), "If-Match": f'"{rev}"',
                                 "Content-Type": "application/merge-patch+json"})


def test_predict_answers_with_version_variant_and_request_id(
        client: httpx.Client) -> None:
    r = client.post("/predict", json=body(), headers={"X-Request-ID": "req-123"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model"] == "breast_cancer" and out["request_id"] == "req-123"
    assert out["variant"] in ("champion", "canary")
    assert r.headers["x-request-id"] == "req-123" and int(r.headers["x-vigil-revision"]) >= 1
    pred = out["predictions"][0]
    assert set(pred) == {"label", "label_index", "probabilities"}
    assert list(pred["probabilities"]) == ["malignant", "benign"]
    assert pred["label"] == ["malignant", "benign"][pred["label_index"]]
    # rows in card order give the same answer from the same version
    r2 = client.post("/predict", json={"model": "breast_cancer", "instances": [ROW],
                                       "routing_key": "same-key"})
    r3 = client.post("/predict", json=body("same-key"))
    assert r2.json()["predictions"] == r3.json()["predictions"]
    reg = client.post("/predict", json={"model": "diabetes", "instances": [[0.0] * 10]})
    assert reg.status_code == 200 and isinstance(reg.json()["predictions"][0]["value"], float)


@pytest.mark.parametrize("payload,status,field", [
    ({"model": "breast_cancer", "inputs": [{"mean radius": "big"}]}, 422,
     "inputs[0].mean radius"),
    ({"model": "breast_cancer", "instances": [[1, 2, 3]]}, 422, "instances[0]"),
    ({"model": "breast_cancer"}, 422, "inputs"),
    ({"model": "breast_cancer", "inputs": [], "extra": 1}, 422, "extra"),
    ({"model": "nope", "instances": [[1]]}, 404, "model"),
    ({"inputs": [{}]}, 422, "model"),
    ({"model": "breast_cancer", "instances": [[0.0] * 30] * 1001}, 413, "instances"),
    ([1, 2], 422, "body"),
])
def test_bad_bodies_get_a_4xx_naming_the_field(client: httpx.Client, payload: Any,
                                               status: int, field: str) -> None:
    r = client.post("/predict", json=payload)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and r.json()["error"]


def test_malformed_and_oversized_bodies(client: httpx.Client, server: Server) -> None:
    r = client.post("/predict", content=b"{not json",
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "body"
    r = client.post("/predict", content=b"x" * (4 * 1024 * 1024 + 10),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["field"] == "body"
    assert "Traceback" not in server.log.read_text()


def test_canary_weight_02_gives_a_share_of_02(client: httpx.Client, server: Server) -> None:
    r = patch(client, server, {"canary": {"version": "v2", "weight": 0.2}})
    assert r.status_code == 200, r.text
    time.sleep(POLL_SECONDS + 1)
    # the deployment's routing salt is random per store, so which 2,000 keys reach the
    # canary varies (0.232 seen once): every answer must be the one routing gives for this
    # salt, and the share that salt gives over 10,000 keys must be 0.2 ± 0.03
    deployment = DeploymentStore(make_engine(f"sqlite:///{server.data_dir / 'vigil.db'}")
                                 ).get("breast_cancer")
    assert deployment.canary is not None and deployment.canary.weight == 0.2
    for i in range(2000):
        resp = client.post("/predict", json=body(f"user-{i}"))
        assert resp.status_code == 200
        expected = route(deployment, f"user-{i}")
        assert expected is not None and resp.json()["variant"] == expected.variant, i
    share = sum(route(deployment, f"user-{i}").variant == "canary"  # type: ignore[union-attr]
                for i in range(10_000)) / 10_000
    assert abs(share - 0.2) <= 0.03, share


def test_a_key_lands_on_the_same_variant_in_every_worker(server: Server) -> None:
    seen: dict[str, set[str]] = {}
    # a fresh connection each time, so the requests spread over both workers
    with httpx.Client(base_url=server.url, timeout=10,
                      limits=httpx.Limits(max_keepalive_connections=0)) as c:
        for _ in range(6):
            for i in range(60):
                r = c.post("/predict", json=body(f"sticky-{i}"),
                           headers={"Connection": "close"})
                seen.setdefault(f"sticky-{i}", set()).add(r.json()["version"])
    assert all(len(v) == 1 for v in seen.values())
    assert {next(iter(v)) for v in seen.values()} == {"v1", "v2"}


def test_a_committed_change_reaches_every_worker_within_the_poll_interval(
        client: httpx.Client, server: Server) -> None:
    results: list[tuple[float, int, int]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=server.url, timeout=10,
                          limits=httpx.Limits(max_keepalive_connections=0)) as c:
            while not stop.is_set():
                sent = time.monotonic()
                r = c.post("/predict", json=body())
                results.append((sent, r.status_code, int(r.headers.get("x-vigil-revision",
                                                                           -1))))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    r = patch(client, server, {"canary": {"weight": 0.3}})
    committed = time.monotonic()
    assert r.status_code == 200, r.text
    new_revision = r.json()["revision"]
    time.sleep(POLL_SECONDS + 2.5)
    stop.set()
    for t in threads:
        t.join()
    assert all(status == 200 for _, status, _ in results)
    late = [rev for sent, _, rev in results if sent > committed + POLL_SECONDS + 1]
    assert late and all(rev >= new_revision for rev in late)


def test_a_stale_if_match_gets_412_and_changes_nothing(client: httpx.Client,
                                                       server: Server) -> None:
    current = deployment(client, server)
    r = patch(client, server, {"canary": {"weight": 0.9}}, revision=current["revision"] - 1)
    assert r.status_code == 412 and r.json()["field"] == "If-Match"
    assert deployment(client, server) == current
    r = client.patch("/admin/deployments/breast_cancer", json={"canary": None},
                     headers=server.headers("operator"))
    assert r.status_code == 428


def test_promote_then_rollback_restores_the_original_champion(
        client: httpx.Client, server: Server) -> None:
    before = deployment(client, server)
    assert before["champion"]["version"] == "v1" and before["canary"]["version"] == "v2"
    r = client.post("/admin/deployments/breast_cancer/promote",
                    headers=server.headers("operator"))
    assert r.status_code == 200 and r.json()["champion"]["version"] == "v2"
    assert r.json()["history"][-1] == "v1"
    time.sleep(POLL_SECONDS + 1)
    versions = {client.post("/predict", json=body(f"k{i}")).json()["version"]
                for i in range(40)}
    assert versions == {"v2"}
    r = client.post("/admin/deployments/breast_cancer/rollback",
                    headers=server.headers("operator"))
    assert r.status_code == 200 and r.json()["champion"]["version"] == "v1"
    assert r.json()["canary"] is None
    # put the canary back for the other tests
    assert patch(client, server, {"canary": {"version": "v2", "weight": 0.2}}).status_code == 200
    audit = client.get("/admin/audit?limit=5", headers=server.headers("viewer")).json()
    actions = [a["action"] for a in audit["items"]]
    assert actions[:3] == ["deployments.patch", "deployments.rollback", "deployments.promote"]
    assert audit["items"][1]["actor"] == "operator-token"
    assert audit["items"][1]["before"]["champion"]["version"] == "v2"


ADMIN_ROUTES = [
    ("GET", "/admin/models", "viewer"),
    ("GET", "/admin/models/breast_cancer/versions/v1", "viewer"),
    ("POST", "/admin/models/breast_cancer/versions", "admin"),
    ("GET", "/admin/deployments", "viewer"),
    ("GET", "/admin/deployments/breast_cancer", "viewer"),
    ("PATCH", "/admin/deployments/breast_cancer", "operator"),
    ("POST", "/admin/deployments/breast_cancer/promote", "operator"),
    ("POST", "/admin/deployments/breast_cancer/rollback", "operator"),
    ("GET", "/admin/audit", "viewer"),
]
BELOW = {"viewer": "feedback", "operator": "viewer", "admin": "operator"}


@pytest.mark.parametrize("method,path,role", ADMIN_ROUTES)
def test_every_admin_route_refuses_and_audits(client: httpx.Client, server: Server,
                                              method: str, path: str, role: str) -> None:
    def denials() -> int:
        items = client.get("/admin/audit?limit=1000",
                           headers=server.headers("admin")).json()["items"]
        return sum(1 for a in items if a["outcome"] == "denied" and a["target"] == path)

    start = denials()
    r = client.request(method, path)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = client.request(method, path, headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401
    r = client.request(method, path, headers=server.headers(BELOW[role]))
    assert r.status_code == 403 and "error" in r.json()
    assert denials() == start + 3
    items = client.get("/admin/audit?limit=3", headers=server.headers("admin")).json()["items"]
    assert "tok-" not in json.dumps(items)  # the token itself is never written
    assert items[0]["actor"] == f"{BELOW[role]}-token"


def _upload(client: httpx.Client, server: Server, onnx: bytes, card: dict[str, Any],
            reference: bytes) -> httpx.Response:
    return client.post(f"/admin/models/{card['name']}/versions",
                       headers=server.headers("admin"),
                       files={"model": ("model.onnx", onnx), "reference": ("ref.csv", reference)},
                       data={"card": json.dumps(card)})


def test_register_a_new_version_and_serve_it_as_a_shadow(client: httpx.Client,
                                                         server: Server) -> None:
    d = DEMO / "breast_cancer" / "v2"
    card = json.loads((d / "card.json").read_text())
    card["version"] = "v2.1"
    args = ((d / "model.onnx").read_bytes(), card, (d / "reference.csv").read_bytes())
    r = _upload(client, server, *args)
    assert r.status_code == 201, r.text
    assert _upload(client, server, *args).status_code == 200
    card["description"] = "other bytes"
    assert _upload(client, server, args[0], card, args[2]).status_code == 409
    info = client.get("/admin/models/breast_cancer/versions/v2.1",
                      headers=server.headers("viewer")).json()
    assert info["card"]["lineage"]["dataset_sha256"] and info["profile"]["rows"] > 100
    before = deployment(client, server)
    r = patch(client, server, {"shadows": [*before["shadows"],
                                           {"version": "v2.1", "sample_rate": 1.0}]})
    assert r.status_code == 200, r.text
    time.sleep(POLL_SECONDS + 1)
    for i in range(20):
        resp = client.post("/predict", json=body(f"s{i}"))
        assert resp.json()["variant"] in ("champion", "canary")  # never the shadow
    shadowed = 'vigil_shadow_requests_total{model="breast_cancer",outcome="ok",version="v2.1"}'
    deadline = time.monotonic() + 30  # the Monitor runs shadows off the log, on its own tick
    while shadowed not in client.get("/metrics").text and time.monotonic() < deadline:
        time.sleep(0.2)
    assert shadowed in client.get("/metrics").text
    assert patch(client, server, {"shadows": before["shadows"]}).status_code == 200


def test_corrupt_onnx_and_foreign_schema_are_refused_and_serving_goes_on(
        client: httpx.Client, server: Server) -> None:
    before = deployment(client, server)
    d = DEMO / "breast_cancer" / "v1"
    card = json.loads((d / "card.json").read_text())
    card["version"] = "corrupt"
    r = _upload(client, server, b"\x08\x07not an onnx graph", card,
                (d / "reference.csv").read_bytes())
    assert r.status_code == 422 and r.json()["field"] == "model"
    assert "ONNX" in r.json()["error"]
    diabetes = DEMO / "diabetes" / "v1"
    foreign = json.loads((diabetes / "card.json").read_text())
    foreign.update(name="breast_cancer", version="foreign")
    r = _upload(client, server, (diabetes / "model.onnx").read_bytes(), foreign,
                (diabetes / "reference.csv").read_bytes())
    assert r.status_code == 201
    r = patch(client, server, {"canary": {"version": "foreign", "weight": 0.5}})
    assert r.status_code == 422 and r.json()["field"] == "canary.version"
    assert "differs from the champion" in r.json()["error"]
    assert deployment(client, server) == before
    ok = [client.post("/predict", json=body(f"after-{i}")).status_code for i in range(20)]
    assert ok == [200] * 20


def test_openapi_document_tells_the_real_statuses(client: httpx.Client) -> None:
    doc = client.get("/docs.json").json()
    predict = doc["paths"]["/predict"]["post"]
    assert {"200", "404", "413", "422"} <= set(predict["responses"])
    assert "400" not in predict["responses"]
    feedback = doc["paths"]["/feedback"]["post"]
    assert {"202", "401", "422", "503"} <= set(feedback["responses"])
    assert "400" not in feedback["responses"] and "200" not in feedback["responses"]
    # feedback needs a token here (auth.feedback: required), inference does not
    assert feedback["security"] == [{"HTTPBearer": []}] and "security" not in predict
    assert "/admin/models/{model}/stats" in doc["paths"]
    assert "/admin/deployments/{model}" in doc["paths"]
    assert "412" in doc["paths"]["/admin/deployments/{model}"]["patch"]["responses"]
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    from importlib.metadata import version
    assert doc["info"]["version"] == version("vigil") and "contact" not in doc["info"]


def test_the_docs_page_loads_nothing_from_elsewhere(client: httpx.Client) -> None:
    """BentoML's page at / loads Google Tag Manager and links GitHub; Vigil's is Swagger UI
    from the server's own files, on the server's own OpenAPI document."""
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "googletagmanager" not in page.text and "https://" not in page.text
    assert "swagger-ui" in page.text
    assert 'url: "./docs.json"' in page.text and "validatorUrl: null" in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css",
                  "index.css"):
        assert client.get(f"/static_content/{asset}").status_code == 200, asset
    assert client.head("/").status_code == 200


def test_metrics_add_up_across_workers(client: httpx.Client) -> None:
    def total() -> float:
        text = client.get("/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("vigil_requests_total{") and 'model="diabetes"' in line)

    before = total()
    for _ in range(30):
        with httpx.Client(base_url=client.base_url, timeout=10) as c:
            assert c.post("/predict", json={"model": "diabetes", "instances": [[0.01] * 10]},
                          headers={"Connection": "close"}).status_code == 200
    assert total() == before + 30
    text = client.get("/metrics").text
    assert "bentoml_service_request_total" not in text  # BentoML's raw-path series are off
    assert "vigil_request_duration_seconds_bucket" in text


def test_health_endpoints(client: httpx.Client) -> None:
    assert client.get("/readyz").status_code == 200
    assert client.get("/livez").status_code == 200


def test_bentoml_build_succeeds(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from load_tests.servers import ROOT

    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "home"), "BENTOML_DO_NOT_TRACK": "true"}
    out = subprocess.run([str(Path(sys.executable).with_name("bentoml")), "build"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Successfully built Bento" in out.stdout
