from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from service.auth import Authenticator
from service.errors import Forbidden, Unauthorized
from service.httperrors import body_of, headers_of
from service.settings import load_settings


def test_yaml_then_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text("limits:\n  max_rows: 10\nstore:\n  deployment_poll_seconds: 2\n")
    monkeypatch.setenv("VIGIL_CONFIG", str(cfg))
    monkeypatch.setenv("VIGIL_STORE__DEPLOYMENT_POLL_SECONDS", "0.1")
    monkeypatch.setenv("VIGIL_DATA_DIR", str(tmp_path / "data"))
    s = load_settings()
    assert s.limits.max_rows == 10
    assert s.store.deployment_poll_seconds == 0.1
    assert s.store_url == f"sqlite:///{(tmp_path / 'data').resolve() / 'vigil.db'}"


def test_unknown_config_keys_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text("limits:\n  max_rowz: 10\n")
    monkeypatch.setenv("VIGIL_CONFIG", str(cfg))
    with pytest.raises(ValueError, match="max_rowz"):
        load_settings()


def _auth(monkeypatch: pytest.MonkeyPatch) -> Authenticator:
    tokens = [{"name": "ci", "role": "operator",
               "sha256": hashlib.sha256(b"op-token").hexdigest()},
              {"name": "app", "role": "client", "sha256": hashlib.sha256(b"cl").hexdigest()}]
    monkeypatch.setenv("VIGIL_AUTH__TOKENS", json.dumps(tokens))
    monkeypatch.setenv("VIGIL_BOOTSTRAP_ADMIN_TOKEN", "boot")
    monkeypatch.setenv("VIGIL_CONFIG", "/nonexistent.yaml")
    return Authenticator(load_settings().auth)


def test_roles_are_ordered(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = _auth(monkeypatch)
    assert auth.require("Bearer op-token", "viewer").name == "ci"
    assert auth.require("Bearer boot", "admin").name == "bootstrap"
    with pytest.raises(Forbidden):
        auth.require("Bearer op-token", "admin")
    with pytest.raises(Forbidden):
        auth.require("Bearer cl", "feedback")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer wrong", "Basic op-token",
                                    "op-token", "Bearer " + "x" * 5000])
def test_missing_or_unknown_tokens_are_401_with_challenge(
        monkeypatch: pytest.MonkeyPatch, header: str | None) -> None:
    auth = _auth(monkeypatch)
    with pytest.raises(Unauthorized) as err:
        auth.require(header, "client")
    body = body_of(err.value)
    assert body["field"] == "authorization"
    if header:  # sent but not a known token (RFC 6750 §3: invalid_token)
        assert headers_of(err.value)["WWW-Authenticate"] == 'Bearer error="invalid_token"'
        assert body["reason"] == "unknown token"
    else:  # none sent: the bare challenge
        assert headers_of(err.value)["WWW-Authenticate"] == "Bearer"
        assert body["reason"] == "missing"
