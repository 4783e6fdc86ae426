"""Start and stop a real ``bentoml serve`` on a free loopback port: shared by the e2e tests
and the benchmark, so both wait for readiness and shut down the same way."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(data_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a server that keeps everything under ``data_dir``, as on a machine
    of its own: its data, its own BentoML model store, the repository's ``vigil.yaml``."""
    env = {**os.environ, "VIGIL_DATA_DIR": str(data_dir),
           "BENTOML_HOME": str(data_dir / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
           "VIGIL_CONFIG": str(ROOT / "vigil.yaml"), **(extra or {})}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # each server its own metrics directory
    return env


def serve(target: str, env: dict[str, str], log: Path, timeout: float = 90,
          tls: ssl.SSLContext | None = None, port: int | None = None
          ) -> tuple[subprocess.Popen[bytes], str]:
    """Run ``bentoml serve target`` until ``/readyz`` answers 200; returns process and URL.
    ``tls``: the server speaks HTTPS (``VIGIL_SERVER__TLS__*`` in ``env``); this client
    context, trusting its CA (and holding a client certificate for mTLS), probes it.
    ``port``: default a free one."""
    port = port or free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    bentoml = Path(sys.executable).with_name("bentoml")
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [str(bentoml), "serve", target, "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve {target} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1, verify=tls or True).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    stop(proc)
    raise RuntimeError(f"bentoml serve {target} not ready in {timeout:g} s:\n"
                       f"{log.read_text()[-3000:]}")


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server; SIGKILL it after 20 s. circus gives every worker a session of its
    own, so any worker still alive 10 s after the server is SIGKILLed too."""
    children = descendants(proc.pid)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    _, alive = psutil.wait_procs(children, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
