"""TLS settings: the BentoML ssl config (mTLS means CERT_REQUIRED), the development PKI, the
outgoing contexts of webhook targets and the CLI."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from pydantic import ValidationError

from monitoring.retrain.webhooks import targets_from_config
from monitoring.tls import client_context, target_mounts
from service.devcert import make_dev_pki
from service.settings import load_settings
from service.tls import bentoml_ssl


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_dev_pki(tmp_path_factory.mktemp("pki"), ["gateway.internal"])


def test_server_tls_becomes_bentoml_ssl_and_a_ca_requires_client_certificates(
        pki: dict[str, Path]) -> None:
    s = load_settings(server={"tls": {"certfile": str(pki["server.pem"]),
                                      "keyfile": str(pki["server.key"])}})
    config = bentoml_ssl(s.server.tls)["ssl"]
    assert config["enabled"] and config["certfile"] == str(pki["server.pem"])
    assert "cert_reqs" not in config and "ca_certs" not in config
    s = load_settings(server={"tls": {"certfile": str(pki["server.pem"]),
                                      "keyfile": str(pki["server.key"]),
                                      "ca_certs": str(pki["ca.pem"])}})
    config = bentoml_ssl(s.server.tls)["ssl"]
    # BentoML's default cert_reqs is 0: a CA alone would let a client without one in
    assert config["cert_reqs"] == ssl.CERT_REQUIRED and config["ca_certs"] == str(pki["ca.pem"])


@pytest.mark.parametrize("tls", [{"certfile": "x.pem"}, {"ca_certs": "ca.pem"},
                                 {"certfile": "/nonexistent.pem", "keyfile": "/nonexistent"}])
def test_incomplete_tls_settings_are_refused(tls: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="server.tls"):
        load_settings(server={"tls": tls})


def test_the_dev_pki_chains_and_names_the_server(pki: dict[str, Path]) -> None:
    server = x509.load_pem_x509_certificate(pki["server.pem"].read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "gateway.internal"} <= set(names.get_values_for_type(x509.DNSName))
    assert pki["server.key"].stat().st_mode & 0o077 == 0
    ctx = client_context(pki["ca.pem"], certfile=pki["client.pem"], keyfile=pki["client.key"])
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def test_a_webhook_target_may_trust_its_own_ca_or_turn_checks_off_with_a_warning(
        pki: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "vigil.webhooks"):
        targets = targets_from_config([
            {"name": "a", "type": "generic", "url": "https://a.example:8443/hook",
             "ca_bundle": str(pki["ca.pem"])},
            {"name": "b", "type": "generic", "url": "https://b.example/hook", "verify": False},
            {"name": "c", "type": "generic", "url": "https://c.example/hook"}])
    assert "webhooks.targets.b: certificate verification is OFF" in caplog.text
    assert "targets.a" not in caplog.text and "targets.c" not in caplog.text
    assert set(target_mounts(targets)) == {"https://a.example:8443", "https://b.example"}
