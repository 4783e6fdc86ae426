"""Shared fixtures: isolated data dirs, a fresh registry per test, store engines (SQLite
always, PostgreSQL when VIGIL_TEST_POSTGRES_URL is set), and a hypothesis CI profile."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=60, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("soak", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "demo" / "artifacts"


def demo_files(name: str, version: str) -> tuple[bytes, dict, bytes]:
    d = DEMO / name / version
    return ((d / "model.onnx").read_bytes(), json.loads((d / "card.json").read_text()),
            (d / "reference.csv").read_bytes())


@pytest.fixture(scope="session", autouse=True)
def _bentoml_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """In-process tests use their own BentoML model store, never the user's."""
    home = tmp_path_factory.mktemp("bentoml-home")
    old = os.environ.get("BENTOML_HOME")
    os.environ["BENTOML_HOME"] = str(home)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    yield home
    if old is None:
        os.environ.pop("BENTOML_HOME", None)
    else:
        os.environ["BENTOML_HOME"] = old


@pytest.fixture(scope="session")
def registry():  # type: ignore[no-untyped-def]
    """One registry with the demo versions (the store is session-wide, versions immutable)."""
    from models.registry import Registry

    reg = Registry()
    for name, version in (("breast_cancer", "v1"), ("breast_cancer", "v2"),
                          ("breast_cancer", "v3"), ("diabetes", "v1")):
        reg.register(*demo_files(name, version))
    return reg


def _postgres_url() -> str | None:
    return os.environ.get("VIGIL_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A migrated, empty store on SQLite, and on PostgreSQL when it is configured."""
    import sqlalchemy as sa

    from store import make_engine, migrate

    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'vigil.db'}")
        migrate(eng)
        yield eng
        eng.dispose()
        return
    url = _postgres_url()
    if not url:
        pytest.skip("VIGIL_TEST_POSTGRES_URL is not set: no PostgreSQL server to test against")
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    eng = sa.create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    migrate(eng)
    yield eng
    eng.dispose()
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@contextmanager
def asgi_gateway(data: Path, env: dict[str, str]) -> Iterator[Any]:
    """The Gateway as an ASGI app in this process (``Service.to_asgi()`` + TestClient), with
    ``env`` over the repository's vigil.yaml and a data dir of its own. The process's
    settings are read once, so they are re-read on the way in and out; the metrics the
    worker registered in the default registry are unregistered after, so the next module's
    Gateway can register its own (one per process under ``bentoml serve``)."""
    from prometheus_client import REGISTRY
    from starlette.testclient import TestClient

    from service.bootstrap import bootstrap
    from service.settings import settings as vigil_settings

    env = {"VIGIL_DATA_DIR": str(data), "PROMETHEUS_MULTIPROC_DIR": str(data / "prom"),
           "VIGIL_CONFIG": str(Path(__file__).resolve().parents[1] / "vigil.yaml"), **env}
    (data / "prom").mkdir(exist_ok=True)
    saved = {k: os.environ.get(k) for k in env}
    registered = set(REGISTRY._collector_to_names)  # no public listing of the collectors
    os.environ.update(env)
    vigil_settings.cache_clear()
    try:
        from service.gateway import Gateway

        bootstrap(vigil_settings())  # what @bentoml.on_deployment does under serve
        with TestClient(Gateway.to_asgi()) as client:
            yield client
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        vigil_settings.cache_clear()
        for collector in set(REGISTRY._collector_to_names) - registered:
            REGISTRY.unregister(collector)
