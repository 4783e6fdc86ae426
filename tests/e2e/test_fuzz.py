"""Schemathesis against the OpenAPI document of a real ``bentoml serve`` (2 workers), with
every check on (`tests/e2e/schemathesis.toml` says where and why a check is tuned), once
without a token and once with a token of each role: no 5xx, no undocumented status or
content type, no response that breaks its schema, no authorization ignored, no unhandled
exception in the server's log."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import TOKENS, Server, start_server, stop_server

pytestmark = pytest.mark.e2e
CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# (role, examples per operation, phases): the admin run reaches every handler and runs the
# stateful phase too; the others mostly prove the 401/403 answers, which need less.
RUNS = [(None, 3, "coverage,fuzzing"), ("viewer", 5, "coverage,fuzzing"),
        ("operator", 5, "coverage,fuzzing"), ("admin", 15, "coverage,fuzzing,stateful")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    proc, srv = start_server(tmp_path_factory.mktemp("vigil-fuzz"))
    yield srv
    stop_server(proc)


@pytest.mark.parametrize(("role", "examples", "phases"), RUNS,
                         ids=[r or "no-token" for r, _, _ in RUNS])
def test_schemathesis_finds_nothing(server: Server, role: str | None, examples: int,
                                    phases: str, tmp_path: Path) -> None:
    command = [str(SCHEMATHESIS), "--config-file", str(CONFIG), "run",
               f"{server.url}/docs.json", "--url", server.url, "--checks", "all",
               "--max-examples", str(examples), "--phases", phases, "--seed", "20261128",
               "--no-color", "--report", "har", "--report-dir", str(tmp_path)]
    if role is not None:
        command += ["-H", f"Authorization: Bearer {TOKENS[role]}"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-2000:]
    # every operation the document declares was exercised
    paths = httpx.get(f"{server.url}/docs.json").json()["paths"]
    n = sum(1 for ops in paths.values() for m in ops if m in {"get", "post", "put", "patch",
                                                                "delete"})
    assert n >= 39 and f"Tested: {n}" in run.stdout, run.stdout[-3000:]
    traceback = [line for line in server.log.read_text(errors="replace").splitlines()
                 if line.startswith("Traceback")]
    assert not traceback, server.log.read_text(errors="replace")[-6000:]
