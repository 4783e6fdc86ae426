"""Every admin route × {no token, unknown token, viewer, operator, admin} against a real server:
401 without a valid token, 403 below the route's role, through to the handler otherwise;
every denial audited; no token anywhere in the audit, the metrics or the server log."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import TOKENS, Server, start_server, stop_server

pytestmark = pytest.mark.e2e
ROLES = ["client", "feedback", "viewer", "operator", "admin"]
# (method, path, lowest role). Mutations name a model that does not exist, so an allowed
# call reaches its handler and stops there (404/422) without changing anything.
ROUTES = [
    ("GET", "/admin/models", "viewer"),
    ("GET", "/admin/models/breast_cancer/stats", "viewer"),
    ("GET", "/admin/models/breast_cancer/versions/v1", "viewer"),
    ("POST", "/admin/models/nope/versions", "admin"),
    ("GET", "/admin/deployments", "viewer"),
    ("GET", "/admin/deployments/breast_cancer", "viewer"),
    ("PATCH", "/admin/deployments/nope", "operator"),
    ("POST", "/admin/deployments/nope/promote", "operator"),
    ("POST", "/admin/deployments/nope/rollback", "operator"),
    ("GET", "/admin/drift/breast_cancer", "viewer"),
    ("POST", "/admin/drift/nope/ack", "operator"),
    ("POST", "/admin/drift/nope/rebaseline", "operator"),
    ("POST", "/admin/models/nope/retrain", "operator"),
    ("GET", "/admin/webhooks/deliveries", "viewer"),
    ("POST", "/admin/webhooks/deliveries/999999/redeliver", "operator"),
    ("POST", "/admin/webhooks/nope/test", "operator"),
    ("POST", "/admin/rollouts/nope", "operator"),
    ("GET", "/admin/rollouts/breast_cancer", "viewer"),
    ("POST", "/admin/rollouts/nope/pause", "operator"),
    ("POST", "/admin/experiments/nope", "operator"),
    ("GET", "/admin/experiments/breast_cancer", "viewer"),
    ("POST", "/admin/experiments/nope/stop", "operator"),
    ("GET", "/admin/audit", "viewer"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    proc, srv = start_server(tmp_path_factory.mktemp("vigil-security"))
    yield srv
    stop_server(proc)


def test_every_admin_route_enforces_its_role(server: Server) -> None:
    denials = 0
    with httpx.Client(base_url=server.url, timeout=30) as c:
        documented = {p for p in c.get("/docs.json").json()["paths"] if p.startswith("/admin")}
        for method, path, lowest in ROUTES:
            for who in [None, "unknown", *ROLES]:
                headers = {} if who is None else {
                    "Authorization": f"Bearer {TOKENS.get(who, 'not-a-real-token')}"}
                r = c.request(method, path, headers=headers, json={"candidate": "v2"}
                              if path.startswith("/admin/rollouts/nope") else None)
                if who in (None, "unknown"):
                    expected = {401}
                    assert r.headers.get("www-authenticate") == (
                        "Bearer" if who is None else 'Bearer error="invalid_token"'), (method, path)
                    assert r.json()["field"] == "authorization", (method, path)
                elif ROLES.index(who) < ROLES.index(lowest):
                    expected = {403}
                else:
                    expected = set(range(200, 500)) - {401, 403}
                assert r.status_code in expected, (method, path, who, r.status_code, r.text)
                assert r.status_code < 500
                denials += r.status_code in (401, 403)
        audit = c.get("/admin/audit?limit=1000", headers=server.headers("admin")).json()
        metrics = c.get("/metrics").text
    assert len(documented) >= 18  # the routes are all in the OpenAPI document
    denied = [i for i in audit["items"] if i["outcome"] == "denied"]
    assert len(denied) == denials  # every denial is an audit row
    blob = str(audit) + metrics + server.log.read_text()
    for token in [*TOKENS.values(), "not-a-real-token"]:
        assert token not in blob  # never in the audit, the metrics or the log


def test_unknown_fields_are_refused(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        h = server.headers("operator")
        r = c.post("/admin/rollouts/breast_cancer", json={"candidate": "v2", "stepz": [1]},
                   headers=h)
        assert r.status_code == 422 and r.json()["field"] == "stepz"
        # what `curl -d` sends: JSON labelled as a form; read as JSON like every other body
        form = {**h, "Content-Type": "application/x-www-form-urlencoded"}
        r = c.post("/admin/rollouts/breast_cancer", headers=form,
                   content=b'{"candidate": "v2", "steps": [0.5, 0.2]}')
        assert r.status_code == 422 and r.json()["field"] == "steps", r.text
        assert "increasing" in r.json()["reason"]
        r = c.post("/admin/rollouts/breast_cancer", headers=form, content=b"candidate=v2")
        assert r.status_code == 422 and r.json()["field"] == "body"
        assert "not valid JSON" in r.json()["reason"]
        rev = c.get("/admin/deployments/breast_cancer", headers=h).json()["revision"]
        r = c.patch("/admin/deployments/breast_cancer", json={"champion": "v3"},
                    headers={**h, "If-Match": str(rev)})
        assert r.status_code == 422 and r.json()["field"] == "champion"
        r = c.post("/predict", json={"model": "diabetes", "instances": [[0.0] * 10],
                                     "debug": True})
        assert r.status_code == 422 and r.json()["field"] == "debug"
