"""One real ``bentoml serve`` (2 workers, its own data dir and BentoML home) per session."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data_dir: Path, extra_env: dict[str, str] | None = None) -> tuple[
        subprocess.Popen[bytes], Server]:
    port = free_port()
    tokens = [{"name": f"{role}-token", "role": role,
               "sha256": hashlib.sha256(tok.encode()).hexdigest()}
              for role, tok in TOKENS.items() if role != "admin"]
    env = {**os.environ, "VIGIL_DATA_DIR": str(data_dir),
           "BENTOML_HOME": str(data_dir / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
           "VIGIL_BOOTSTRAP_ADMIN_TOKEN": TOKENS["admin"],
           "VIGIL_AUTH__TOKENS": json.dumps(tokens),
           "VIGIL_STORE__DEPLOYMENT_POLL_SECONDS": str(POLL_SECONDS),
           "VIGIL_SERVER__WORKERS": "2", "VIGIL_CONFIG": str(ROOT / "vigil.yaml"),
           **(extra_env or {})}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = data_dir / "server.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    bentoml = Path(sys.executable).with_name("bentoml")
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [str(bentoml), "serve", "service.gateway:Gateway", "--host", "127.0.0.1",
             "--port", str(port)], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", data_dir, log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                return proc, server
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    stop_server(proc)
    raise RuntimeError(f"bentoml serve not ready in 90 s:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    proc, srv = start_server(tmp_path_factory.mktemp("vigil-e2e"))
    yield srv
    stop_server(proc)


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c
