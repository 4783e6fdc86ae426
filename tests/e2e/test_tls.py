"""HTTPS on a real server (a development CA from service/devcert.py): /predict, /v2 through
tritonclient, the admin API and the CLI; plain HTTP to the TLS port fails; with mTLS a client
without a certificate is refused and one with a certificate gets through, probes included."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from monitoring.tls import client_context
from service.cli import app
from service.devcert import make_dev_pki
from tests.e2e.conftest import TOKENS, Server, start_server, stop_server
from tests.e2e.test_monitoring import wait_for

pytestmark = pytest.mark.e2e
ROW = [0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.02]


def tls_env(pki: dict[str, Path], mtls: bool = False) -> dict[str, str]:
    env = {"VIGIL_SERVER__TLS__CERTFILE": str(pki["server.pem"]),
           "VIGIL_SERVER__TLS__KEYFILE": str(pki["server.key"])}
    if mtls:  # the Monitor is no part of what mTLS changes: one process less to start
        env.update(VIGIL_SERVER__TLS__CA_CERTS=str(pki["ca.pem"]),
                   VIGIL_MONITOR__ENABLED="false")
    return env


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_dev_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def https(pki: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    proc, srv = start_server(tmp_path_factory.mktemp("vigil-tls"), tls_env(pki),
                             tls=client_context(pki["ca.pem"]))
    yield srv
    stop_server(proc)


def test_predict_and_the_admin_api_answer_over_https(https: Server,
                                                     pki: dict[str, Path]) -> None:
    assert https.url.startswith("https://")
    with httpx.Client(base_url=https.url, verify=client_context(pki["ca.pem"])) as c:
        r = c.post("/predict", json={"model": "diabetes", "instances": [ROW]})
        assert r.status_code == 200 and r.json()["model"] == "diabetes", r.text
        assert c.get("/admin/models", headers=https.headers("viewer")).status_code == 200
        for probe in ("/livez", "/readyz", "/metrics"):
            assert c.get(probe).status_code == 200

        def counted() -> int:  # the Monitor, behind the TLS Gateway, still reads the log
            stats = c.get("/admin/models/diabetes/stats", headers=https.headers("viewer"))
            return sum(x["requests"] for d in stats.json()["versions"].values()
                       for x in d.values())

        assert wait_for(counted, lambda n: n >= 1, timeout=30) >= 1


def test_plain_http_and_an_unknown_ca_are_refused(https: Server) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(https.url.replace("https://", "http://") + "/readyz", timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(https.url + "/readyz", timeout=5)  # the system's CAs do not know ours


def test_open_inference_protocol_through_tritonclient_over_https(
        https: Server, pki: dict[str, Path]) -> None:
    httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is a "
                                     "dev extra")
    client = httpclient.InferenceServerClient(
        url=https.url.removeprefix("https://"), ssl=True,
        ssl_options={"ca_certs": str(pki["ca.pem"])})
    try:
        assert client.is_server_live() and client.is_model_ready("diabetes")
        x = httpclient.InferInput("X", [1, len(ROW)], "FP32")
        x.set_data_from_numpy(np.array([ROW], dtype=np.float32))
        result = client.infer("diabetes", [x])
        assert result.as_numpy("variable").shape[0] == 1
    finally:
        client.close()


def test_the_cli_over_https(https: Server, pki: dict[str, Path]) -> None:
    env = {"VIGIL_URL": https.url, "VIGIL_TOKEN": TOKENS["admin"], "COLUMNS": "200"}
    ok = CliRunner(env={**env, "VIGIL_CA_BUNDLE": str(pki["ca.pem"])}).invoke(
        app, ["models", "list"])
    assert ok.exit_code == 0 and "diabetes" in ok.output, ok.output
    unknown = CliRunner(env=env).invoke(app, ["models", "list"])
    assert unknown.exit_code == 7  # unreachable: its certificate is not trusted


def test_mtls_refuses_a_client_without_a_certificate(
        pki: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> None:
    with_cert = client_context(pki["ca.pem"], certfile=pki["client.pem"],
                               keyfile=pki["client.key"])
    proc, srv = start_server(tmp_path_factory.mktemp("vigil-mtls"), tls_env(pki, mtls=True),
                             tls=with_cert)
    try:
        r = httpx.post(srv.url + "/predict", json={"model": "diabetes", "instances": [ROW]},
                       verify=with_cert)
        assert r.status_code == 200, r.text
        assert httpx.get(srv.url + "/readyz", verify=with_cert).status_code == 200
        with pytest.raises((httpx.TransportError, ssl.SSLError)):
            httpx.get(srv.url + "/readyz", verify=client_context(pki["ca.pem"]), timeout=5)
        cli = CliRunner(env={"VIGIL_URL": srv.url, "VIGIL_TOKEN": TOKENS["admin"],
                             "VIGIL_CA_BUNDLE": str(pki["ca.pem"]),
                             "VIGIL_CLIENT_CERT": str(pki["client.pem"]),
                             "VIGIL_CLIENT_KEY": str(pki["client.key"])})
        assert cli.invoke(app, ["models", "list"]).exit_code == 0
    finally:
        stop_server(proc)
