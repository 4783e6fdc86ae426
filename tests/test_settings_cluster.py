"""The cluster keys: their defaults, and the combinations that refuse to start."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from service.settings import load_settings

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ROOT = Path(__file__).resolve().parents[1]


def test_defaults_keep_one_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_CONFIG", "/nonexistent.yaml")
    s = load_settings()
    assert s.log.backend == "local"
    assert s.log.nats.url == "nats://127.0.0.1:4222"
    assert s.log.nats.stream == "VIGIL"
    assert s.log.nats.duplicate_window == 600.0
    assert s.log.partitions == 8
    assert s.server.replica_id == (socket.gethostname() or "localhost")


def test_env_chooses_the_nats_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_LOG__BACKEND", "nats")
    monkeypatch.setenv("VIGIL_LOG__NATS__STREAM", "T1")
    monkeypatch.setenv("VIGIL_LOG__PARTITIONS", "4")
    s = load_settings()
    assert (s.log.backend, s.log.nats.stream, s.log.partitions) == ("nats", "T1", 4)


@pytest.mark.parametrize(("store", "backend", "named"), [
    (None, "local", ["store.url is SQLite", "log.backend is local"]),
    (None, "nats", ["store.url is SQLite"]),
    (PG, "local", ["log.backend is local"]),
])
def test_a_replica_id_needs_postgres_and_nats(store: str | None, backend: str,
                                              named: list[str]) -> None:
    overrides = {"server": {"replica_id": "r1"}, "log": {"backend": backend}}
    if store:
        overrides["store"] = {"url": store}
    with pytest.raises(ValueError) as e:
        load_settings(**overrides)
    for text in named:
        assert text in str(e.value)
    assert "server.replica_id" in str(e.value)


def test_postgres_and_nats_take_a_replica_id() -> None:
    s = load_settings(server={"replica_id": "r1"}, store={"url": PG}, log={"backend": "nats"})
    assert s.server.replica_id == "r1"


def test_the_server_refuses_to_start_with_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "VIGIL_SERVER__REPLICA_ID": "r1",
           "VIGIL_CONFIG": str(tmp_path / "none.yaml"), "VIGIL_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", "from service.settings import settings; "
                          "settings()"], env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    problems = [line for line in out.stderr.splitlines() if line.startswith("  ")]
    assert len(problems) == 1
    assert "server.replica_id" in problems[0] and "log.backend" in problems[0]


def test_an_encrypted_log_on_nats_starts(tmp_path: Path) -> None:
    """``log.encryption.key`` with ``log.backend: nats`` once refused to start; records on
    NATS are sealed now (tests/test_log_nats_encryption.py)."""
    key = "q" * 43 + "="
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "VIGIL_LOG__BACKEND": "nats",
           "VIGIL_LOG__ENCRYPTION__KEY": key, "VIGIL_CONFIG": str(tmp_path / "none.yaml"),
           "VIGIL_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", "from service.settings import settings; "
                          "s = settings(); print(s.log.backend, s.log.encryption.keys() "
                          "is not None)"], env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["nats", "True"]
