"""Shared artifacts and readiness, on two real servers (one worker each, their own data dirs
and BentoML homes) sharing one store: PostgreSQL when VIGIL_TEST_POSTGRES_URL is set, else
one SQLite file. An empty server is ready and takes its first registration; a version
registered through A is pulled and served by B; a version whose stored bytes are corrupt
leaves B serving the old revision, not ready (naming the model, version and why) and
counting the failure, until the row is good again."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import DEMO
from tests.e2e.conftest import Server, start_server, stop_server

pytestmark = pytest.mark.e2e
ROW = {"inputs": [{"age": 0.02, "sex": -0.04, "bmi": 0.06, "bp": 0.02, "s1": -0.04,
                   "s2": -0.03, "s3": -0.04, "s4": -0.002, "s5": 0.02, "s6": -0.02}]}
CHUNK = sa.text("SELECT data FROM model_artifact_chunks WHERE model = 'diabetes' AND "
                "version = 'v10' AND part = 'model.onnx' AND chunk = 0")
WRITE = sa.text("UPDATE model_artifact_chunks SET data = :data WHERE model = 'diabetes' AND "
                "version = 'v10' AND part = 'model.onnx' AND chunk = 0")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, sa.Engine]]:
    """The shared store's URL for the servers and an engine for the test."""
    base = os.environ.get("VIGIL_TEST_POSTGRES_URL")
    if not base:
        path = tmp_path_factory.mktemp("vigil-shared") / "vigil.db"
        engine = sa.create_engine(f"sqlite:///{path}")
        yield f"sqlite:///{path}", engine
        engine.dispose()
        return
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    engine = sa.create_engine(base, connect_args={"options": f"-csearch_path={schema}"})
    yield f"{base}?options=-csearch_path%3D{schema}", engine
    engine.dispose()
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(scope="module")
def servers(store: tuple[str, sa.Engine], tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[list[Server]]:
    """A starts on an empty store; B only once A has registered the first model."""
    env = {"VIGIL_STORE__URL": store[0], "VIGIL_SERVER__DEMO": "false",
           "VIGIL_SERVER__WORKERS": "1", "VIGIL_MONITOR__ENABLED": "false"}
    started = [start_server(tmp_path_factory.mktemp("vigil-a"), env)]
    try:
        a = started[0][1]
        ready_when_empty(a)
        r = register(a, "v1")
        assert r.status_code == 201, r.text
        assert r.json()["deployment"]["champion"] == {"version": "v1"}
        started.append(start_server(tmp_path_factory.mktemp("vigil-b"), env))
        yield [srv for _, srv in started]
    finally:
        for proc, _ in started:
            stop_server(proc)


def ready_when_empty(a: Server) -> None:
    """No deployment at all: ready, so a load balancer lets the first registration in."""
    assert httpx.get(f"{a.url}/readyz", timeout=5).status_code == 200
    assert httpx.get(f"{a.url}/v2/health/ready", timeout=5).status_code == 200
    models = httpx.get(f"{a.url}/admin/models", headers=a.headers("viewer"), timeout=5)
    assert models.json() == {"models": []}


def register(srv: Server, version: str) -> httpx.Response:
    d = DEMO / "diabetes" / "v1"
    card = json.loads((d / "card.json").read_text())
    card["version"] = version
    return httpx.post(f"{srv.url}/admin/models/diabetes/versions",
                      headers=srv.headers("admin"), timeout=60,
                      files={"model": ("model.onnx", (d / "model.onnx").read_bytes()),
                             "reference": ("reference.csv", (d / "reference.csv").read_bytes())},
                      data={"card": json.dumps(card)})


def canary(srv: Server, version: str) -> httpx.Response:
    d = httpx.get(f"{srv.url}/admin/deployments/diabetes", headers=srv.headers("viewer"))
    return httpx.patch(f"{srv.url}/admin/deployments/diabetes", timeout=60,
                       headers={**srv.headers("operator"), "If-Match": d.headers["ETag"]},
                       json={"canary": {"version": version, "weight": 1.0}})


def answer(srv: Server) -> dict[str, Any]:
    r = httpx.post(f"{srv.url}/predict", json={"model": "diabetes", **ROW}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def metric(srv: Server, series: str) -> float:
    text = httpx.get(f"{srv.url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(series))


def wait_for(cond: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_the_first_model_registered_on_a_is_served_by_b(servers: list[Server]) -> None:
    a, b = servers
    assert answer(a)["version"] == "v1" and answer(b)["version"] == "v1"
    listed = httpx.get(f"{b.url}/admin/models", headers=b.headers("viewer"), timeout=5).json()
    assert listed["models"] == [{"name": "diabetes", "versions": ["v1"], "champion": "v1"}]


def test_a_version_registered_on_a_is_made_canary_on_b_and_served_by_both(
        servers: list[Server]) -> None:
    a, b = servers
    assert register(a, "v9").status_code == 201
    card = httpx.get(f"{b.url}/admin/models/diabetes/versions/v9", headers=b.headers("viewer"))
    assert card.status_code == 200 and card.json()["card"]["version"] == "v9"
    r = canary(b, "v9")  # B pulls v9, loads and smoke-tests it before it commits
    assert r.status_code == 200, r.text
    assert (answer(b)["version"], answer(b)["variant"]) == ("v9", "canary")
    wait_for(lambda: answer(a)["version"] == "v9")
    assert register(b, "v9").status_code == 200  # the same bytes: already registered
    audit = httpx.get(f"{b.url}/admin/audit", params={"action": "models.register"},
                      headers=b.headers("viewer")).json()["items"]
    assert [i["target"] for i in audit if i["outcome"] == "ok"] == [
        "models/diabetes/versions/v9", "models/diabetes/versions/v1"]  # each once


def test_a_corrupt_artifact_keeps_b_on_the_old_revision_until_the_row_is_good(
        servers: list[Server], store: tuple[str, sa.Engine]) -> None:
    a, b = servers
    assert register(a, "v10").status_code == 201
    engine = store[1]
    with engine.begin() as conn:
        good = conn.execute(CHUNK).scalar_one()
        conn.execute(WRITE, {"data": b"\x00" + bytes(good)[1:]})
    assert canary(a, "v10").status_code == 200  # A has v10 locally: it serves it at once
    assert answer(a)["version"] == "v10"
    series = 'vigil_artifact_fetch_failures_total{model="diabetes",version="v10"}'
    wait_for(lambda: metric(b, series) >= 1)
    assert answer(b)["version"] == "v9"  # the revision B had
    readyz = httpx.get(f"{b.url}/readyz", timeout=5)
    assert readyz.status_code == 503 and readyz.headers["Retry-After"]
    for text in (readyz.text, httpx.get(f"{b.url}/v2/health/ready").json()["error"]):
        assert "diabetes" in text and "version 'v10'" in text, text
        assert "model.onnx differs from what was registered" in text, text
    assert metric(b, 'vigil_deployment_behind{model="diabetes"}') == 1
    assert httpx.get(f"{a.url}/readyz", timeout=5).status_code == 200
    with engine.begin() as conn:  # the row is good again: B pulls it on a later poll
        conn.execute(WRITE, {"data": bytes(good)})
    wait_for(lambda: httpx.get(f"{b.url}/readyz", timeout=5).status_code == 200, 45)
    assert answer(b)["version"] == "v10"
    assert httpx.get(f"{b.url}/v2/health/ready").status_code == 200
    assert metric(b, 'vigil_deployment_behind{model="diabetes"}') == 0
    assert Path(b.data_dir / "bentoml" / "models" / "diabetes" / "v10").is_dir()
