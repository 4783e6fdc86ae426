"""``deploy/``: the Kubernetes manifests validate offline against the bundled schemas of named
Kubernetes versions (``kubernetes-validate``, strict: an unknown field fails), and they agree
with the code: every ``VIGIL_*`` variable is a Settings key and together they make valid
multi-replica Settings, the probes are routes the server has, the container port is the one
``bentoml serve`` listens on, the grace period outlasts the drain and the Monitor's last
tick, and the PodDisruptionBudget and the Service find the Deployment's pods. Nothing is
applied to a cluster."""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from monitoring.monitor import Monitor
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
# the oldest release the manifests are written for (the PDB's unhealthyPodEvictionPolicy is
# GA in 1.31) and the newest kubernetes-validate bundles
K8S_VERSIONS = ("1.31.0", "1.37.0")
EXAMPLE_SECRET = "secret.example.yaml"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifests() -> list[Path]:
    return sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def one(kind: str) -> dict[str, Any]:
    [found] = [d for p in manifests() for d in documents(p) if d["kind"] == kind]
    return found


def container() -> dict[str, Any]:
    [c] = one("Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c["env"]}


def is_settings_key(name: str) -> bool:
    """``VIGIL_LOG__NATS__URL`` → log.nats.url, walked through the Settings model."""
    model: Any = Settings
    for part in name.removeprefix("VIGIL_").lower().split("__"):
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or \
                part not in model.model_fields:
            return False
        model = model.model_fields[part].annotation
    return not (isinstance(model, type) and issubclass(model, BaseModel))  # a leaf


def validate(doc: dict[str, Any], version: str, source: str) -> None:
    """Strict: a field the schema does not know fails, as ``kubectl --validate=strict``."""
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(p) for p in e.path)
        pytest.fail(f"{source}: {doc['kind']} at {where}: {e.message}")


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", manifests(), ids=lambda p: p.name)
def test_every_manifest_validates_strictly(path: Path, version: str) -> None:
    docs = documents(path)
    assert docs
    for doc in docs:
        validate(doc, version, path.name)


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    k = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert k["kind"] == "Kustomization"
    assert sorted(k["resources"]) == sorted(p.name for p in manifests()
                                            if p.name != EXAMPLE_SECRET)
    assert [i["name"] for i in k["images"]] == [container()["image"]]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed (its "
                    "kustomize renders deploy/ offline; the files are validated one by one "
                    "above either way)")
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kustomize_renders_valid_resources(version: str) -> None:
    out = subprocess.run(["kubectl", "kustomize", str(DEPLOY)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert sorted(d["kind"] for d in docs) == ["Deployment", "PodDisruptionBudget", "Service"]
    for doc in docs:
        validate(doc, version, "kubectl kustomize deploy/")


def test_every_vigil_variable_is_a_settings_key() -> None:
    names = [n for n in env_of(container()) if n.startswith("VIGIL_")]
    assert len(names) >= 10
    assert [n for n in names if not is_settings_key(n)] == []
    assert not is_settings_key("VIGIL_LOG__NATS__URLS") and not is_settings_key("VIGIL_LOG")


def example_env() -> dict[str, str]:
    """The Deployment's environment as a pod would see it, with the example Secret's
    values and a pod's name and address."""
    secret = one("Secret")
    fields = {"metadata.name": "vigil-7d9f8b6c5-x2x7q", "status.podIP": "10.0.3.17"}
    env: dict[str, str] = {}
    for name, e in env_of(container()).items():
        if "value" in e:
            env[name] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], e["value"])
        elif "secretKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            env[name] = secret["stringData"][ref["key"]]
        else:
            env[name] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def test_the_environment_makes_multi_replica_settings(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    """Settings built from exactly this environment: PostgreSQL, NATS, a replica id (so the
    start is not refused), and the paths BentoML and Vigil write under a mounted volume
    (the root filesystem is read-only)."""
    for name in list(os.environ):
        if name.startswith("VIGIL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("VIGIL_CONFIG", str(tmp_path / "none.yaml"))  # env only
    env = example_env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = Settings()
    assert s.store_url.startswith("postgresql+psycopg://")
    assert s.log.backend == "nats" and s.log.nats.replicas == 3
    assert s.log.nats.url.count("nats://") == 3
    assert s.server.replica_id == "vigil-7d9f8b6c5-x2x7q"
    assert s.server.base_url == "http://10.0.3.17:3000"
    assert s.auth.bootstrap_admin_token and not s.server.demo
    mounts = [Path(m["mountPath"]) for m in container()["volumeMounts"]]
    for written in (s.data_dir, s.log_dir, Path(env["BENTOML_HOME"]), Path(env["HOME"])):
        assert any(written.is_relative_to(m) for m in mounts), written


def test_the_example_secret_is_a_placeholder() -> None:
    secret = one("Secret")
    refs = {e["valueFrom"]["secretKeyRef"]["key"] for e in env_of(container()).values()
            if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs == set(secret["stringData"]) == {"store-url", "nats-url",
                                                 "bootstrap-admin-token"}
    assert all("CHANGE-ME" in v for k, v in secret["stringData"].items() if k != "nats-url")
    assert "NOT REAL" in (DEPLOY / EXAMPLE_SECRET).read_text()


ROUTES = """
import json
from service.gateway import Gateway
print(json.dumps([getattr(r, "path", None) for r in Gateway.to_asgi().routes]))
"""


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The top-level routes of the Gateway's ASGI app, built in a process of its own (the
    module reads its settings at import)."""
    data = tmp_path_factory.mktemp("routes")
    env = {**os.environ, "VIGIL_DATA_DIR": str(data), "BENTOML_HOME": str(data / "bentoml"),
           "PROMETHEUS_MULTIPROC_DIR": str(data), "VIGIL_CONFIG": str(ROOT / "vigil.yaml"),
           "BENTOML_DO_NOT_TRACK": "true", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", ROUTES], env=env, cwd=ROOT, timeout=120,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_the_probes_are_the_servers_drain_aware_routes(routes: list[str]) -> None:
    c = container()
    probes = {k: c[k]["httpGet"] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"  # 503 while draining (drain.py)
    assert probes["livenessProbe"]["path"] == "/livez"  # stays 200 while draining
    for probe in probes.values():
        assert probe["path"] in routes
        assert probe["port"] in {p["name"] for p in c["ports"]}
    assert "/readyz" in (ROOT / "service" / "drain.py").read_text()


def test_the_container_port_is_the_serve_port() -> None:
    from bentoml._internal.configuration.containers import BentoMLContainer

    [port] = container()["ports"]
    serve_port = BentoMLContainer.http.port.get()  # what `bentoml serve` listens on
    assert port["containerPort"] == serve_port == Settings.model_fields["server"].default.port
    template = one("Deployment")["spec"]["template"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(serve_port)
    assert example_env()["VIGIL_SERVER__BASE_URL"].endswith(f":{serve_port}")


def test_the_grace_period_outlasts_the_drain_and_the_last_tick() -> None:
    """SIGTERM: readiness 503 for ``server.drain_seconds`` while serving, then the Monitor
    waits one second more and runs its last tick (at most its budget plus one interval)."""
    env = example_env()
    drain = float(env["VIGIL_SERVER__DRAIN_SECONDS"])
    tick = Settings.model_fields["monitor"].default.tick_seconds
    budget = inspect.signature(Monitor.tick).parameters["budget_seconds"].default
    grace = one("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > drain + 1.0 + budget + tick
    # the probes see the 503 and the pod leaves the endpoints well before the server stops
    ready = container()["readinessProbe"]
    assert ready["periodSeconds"] * ready["failureThreshold"] < drain


def test_the_budget_and_the_service_find_the_deployments_pods() -> None:
    deployment = one("Deployment")
    pods = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pods.items()
    pdb = one("PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= pods.items()
    assert pdb["maxUnavailable"] < deployment["spec"]["replicas"]
    service = one("Service")["spec"]
    assert service["selector"].items() <= pods.items()
    [port] = service["ports"]
    assert port["targetPort"] in {p["name"] for p in container()["ports"]} | \
        {p["containerPort"] for p in container()["ports"]}


@pytest.fixture(scope="module")
def dockerfile(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The Dockerfile ``bentoml build`` writes for this project (what ``bentoml
    containerize`` builds the image from), in a BentoML home of its own."""
    home = tmp_path_factory.mktemp("bentoml-home")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    out = subprocess.run([str(Path(sys.executable).with_name("bentoml")), "build"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    [built] = (home / "bentos" / "vigil").glob("*/env/docker/Dockerfile")
    return built.read_text()


def test_the_pod_matches_the_image_bentoml_builds(dockerfile: str) -> None:
    """The user, the port and the entrypoint of the generated Dockerfile; the image marks
    itself containerized, which the command unsets: BentoML then restarts a crashed worker
    or Monitor alone, as on a machine (with it, none is restarted: a killed worker is not
    replaced, a killed Monitor stops the server)."""
    import bentoml.serving

    c = container()
    spec = one("Deployment")["spec"]["template"]["spec"]
    uid = re.search(r"^ARG BENTO_USER_UID=(\d+)$", dockerfile, re.M)
    assert uid and spec["securityContext"]["runAsUser"] == int(uid.group(1))
    assert re.search(r"^USER bentoml$", dockerfile, re.M)
    assert f"EXPOSE {c['ports'][0]['containerPort']}" in dockerfile
    entrypoint = re.search(r'^ENTRYPOINT \[ "([^"]+)" \]$', dockerfile, re.M)
    assert entrypoint and c["command"] == ["env", "-u", "BENTOML_CONTAINERIZED",
                                           entrypoint.group(1)]
    assert "ENV BENTOML_CONTAINERIZED=true" in dockerfile
    inside = bentoml.serving.running_inside_container.__wrapped__
    assert inside() == ("BENTOML_CONTAINERIZED" in os.environ)  # what it turns on: no respawn
    assert "respawn=not running_inside_container()" in inspect.getsource(
        bentoml.serving.create_watcher)


def test_the_pod_runs_unprivileged_with_resources() -> None:
    spec = one("Deployment")["spec"]["template"]["spec"]
    c = container()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(c["resources"]["requests"])
    assert "cpu" not in c["resources"].get("limits", {})  # throttling stalls the Monitor


def test_the_spills_fit_in_the_data_volume(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    """Each log writer of the pod (its workers, the Monitor for shadow answers) spills up to
    ``log.retention_max_bytes`` while NATS does not acknowledge. Over the ``/data`` emptyDir's
    sizeLimit the kubelet evicts the pod and deletes the volume, the acknowledged records not
    yet forwarded with it; at the cap the writers refuse labels (503) and count drops. So the
    caps must fit, with a quarter of the volume left for the model store and pulls."""
    for name in list(os.environ):
        if name.startswith("VIGIL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("VIGIL_CONFIG", str(tmp_path / "none.yaml"))
    for name, value in example_env().items():
        monkeypatch.setenv(name, value)
    s = Settings()
    [data] = [v for v in one("Deployment")["spec"]["template"]["spec"]["volumes"]
              if v["name"] == "data"]
    size = data["emptyDir"]["sizeLimit"]
    units = {"Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}
    limit = int(size[:-2]) * units[size[-2:]]
    writers = s.server.workers + 1
    assert writers * s.log.retention_max_bytes <= limit * 3 // 4, (writers, size)
