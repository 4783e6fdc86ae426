"""One real ``bentoml serve`` (2 workers, its own data dir and BentoML home) per session."""

from __future__ import annotations

import hashlib
import json
import ssl
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any

import httpx
import pytest

from load_tests.servers import serve, server_env, stop

TOKENS = {"admin": "tok-admin", "operator": "tok-operator", "viewer": "tok-viewer",
          "feedback": "tok-feedback", "client": "tok-client"}
POLL_SECONDS = 0.25


@dataclass
class Server:
    url: str
    data_dir: Path
    log: Path

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKENS[role]}"}


def e2e_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """What every test server shares: the tokens of each role, short intervals, no drain."""
    tokens = [{"name": f"{role}-token", "role": role,
               "sha256": hashlib.sha256(tok.encode()).hexdigest()}
              for role, tok in TOKENS.items() if role != "admin"]
    return {"VIGIL_BOOTSTRAP_ADMIN_TOKEN": TOKENS["admin"],
            "VIGIL_AUTH__TOKENS": json.dumps(tokens),
            "VIGIL_STORE__DEPLOYMENT_POLL_SECONDS": str(POLL_SECONDS),
            "VIGIL_SERVER__WORKERS": "2", "VIGIL_MONITOR__TICK_SECONDS": "0.25",
            # stop at once (tests/e2e/test_drain.py covers the drain)
            "VIGIL_SERVER__DRAIN_SECONDS": "0",
            **(extra or {})}


def start_server(data_dir: Path, extra_env: dict[str, str] | None = None,
                 tls: ssl.SSLContext | None = None) -> tuple[Popen[bytes], Server]:
    proc, url = serve("service.gateway:Gateway", server_env(data_dir, e2e_env(extra_env)),
                      data_dir / "server.log", tls=tls)
    return proc, Server(url, data_dir, data_dir / "server.log")


stop_server = stop


def monitor_counts(srv: Server, model: str) -> dict[tuple[str, str], int]:
    """What the Monitor has counted for ``model``: requests per (version, variant)."""
    r = httpx.get(f"{srv.url}/admin/models/{model}/stats", headers=srv.headers("viewer"),
                  timeout=10)
    return {(v, var): x["requests"] for v, d in r.json()["versions"].items()
            for var, x in d.items()}


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    proc, srv = start_server(tmp_path_factory.mktemp("vigil-e2e"))
    yield srv
    stop_server(proc)


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def keyed_predictions(url: str, rows: list[dict[str, Any]], first: int = 0
                      ) -> list[dict[str, Any]]:
    """``rows`` as breast_cancer predictions with the routing key ``user-<first + i>``, eight
    at a time, a connection each (so every worker serves); every answer must be a 200."""
    def ask(i: int) -> dict[str, Any]:
        with httpx.Client(base_url=url, timeout=30) as c:
            r = c.post("/predict", json={"model": "breast_cancer", "inputs": [rows[i]]},
                       headers={"X-Routing-Key": f"user-{first + i}"})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(ask, range(len(rows))))
