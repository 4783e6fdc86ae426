"""The ``vigil`` CLI against a real server through a whole lifecycle: register, canary, status,
promote, rollback, audit; human and ``--json`` output; exit codes a CI job branches on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from load_tests.servers import ROOT, free_port
from service.cli import EXIT_AUTH, EXIT_INVALID, EXIT_NOT_FOUND, EXIT_UNREACHABLE, app
from tests.conftest import DEMO
from tests.e2e.conftest import TOKENS, Server, start_server, stop_server
from tests.e2e.test_gateway import ROW
from tests.e2e.test_monitoring import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    proc, srv = start_server(tmp_path_factory.mktemp("vigil-cli"))
    yield srv
    stop_server(proc)


def vigil(srv: Server, *args: str, role: str = "admin", token: str | None = None,
          url: str | None = None, columns: int = 200) -> Any:
    runner = CliRunner(env={"COLUMNS": str(columns), "VIGIL_URL": url or srv.url,
                            "VIGIL_TOKEN": token or TOKENS[role]})
    return runner.invoke(app, list(args))


def as_json(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_whole_lifecycle(server: Server, tmp_path: Path) -> None:
    card = json.loads((DEMO / "breast_cancer" / "v2" / "card.json").read_text())
    del card["lineage"]["dataset_sha256"], card["lineage"]["code_commit"]
    card_path = tmp_path / "card.json"
    card_path.write_text(json.dumps(card))
    reg = as_json(vigil(server, "models", "register", "breast_cancer", "--version", "v7",
                        "--onnx", str(DEMO / "breast_cancer" / "v2" / "model.onnx"),
                        "--card", str(card_path),
                        "--reference", str(DEMO / "breast_cancer" / "v2" / "reference.csv"),
                        "--json"))
    assert reg["created"] and reg["filled"] == ["lineage.dataset_sha256", "lineage.code_commit"]
    shown = as_json(vigil(server, "models", "show", "breast_cancer", "v7", "--json"))
    lineage = shown["card"]["lineage"]
    assert len(lineage["dataset_sha256"]) == 64 and lineage["code_commit"]
    assert lineage["hyperparameters"] == card["lineage"]["hyperparameters"]

    d = as_json(vigil(server, "deploy", "canary", "breast_cancer", "v7", "--weight", "0.3",
                      "--json", role="operator"))
    assert d["canary"] == {"version": "v7", "weight": 0.3}
    with httpx.Client(base_url=server.url, timeout=30) as c:  # traffic, mirrored to v3
        for i in range(12):
            assert c.post("/predict", json={"model": "breast_cancer", "routing_key": f"k{i}",
                                            "instances": [ROW]}).status_code == 200

    def breast_cancer() -> dict[str, Any]:
        status = as_json(vigil(server, "status", "--json", role="viewer"))
        return next(m for m in status["models"] if m["model"] == "breast_cancer")
    row = wait_for(breast_cancer, lambda r: r["requests"].get("v3/shadow") == 12)
    assert row["canary"]["version"] == "v7" and row["champion"] == "v1"
    assert row["requests"].get("v3/shadow") == 12
    answered = sum(n for k, n in row["requests"].items() if not k.endswith("/shadow"))
    assert answered == 12  # champion and canary: the requests themselves
    human = vigil(server, "status", role="viewer")
    assert human.exit_code == 0 and "canary v7 30%" in human.stdout
    # an 80-column terminal: every name and number whole (rich cut them to "breast_can…")
    narrow = vigil(server, "status", role="viewer", columns=80)
    assert narrow.exit_code == 0 and "…" not in narrow.stdout
    assert max(map(len, narrow.stdout.splitlines())) <= 80
    for word in ("breast_cancer", "diabetes", "canary v7 30%", "shadow v3", "quality", "drift"):
        assert word in narrow.stdout, (word, narrow.stdout)
    line = next(t for t in narrow.stdout.splitlines() if t.startswith("breast_cancer"))
    assert line.split()[3] == "12", line  # req: the 12 requests, not their 12 shadow answers

    promoted = vigil(server, "promote", "breast_cancer", role="operator")
    assert promoted.exit_code == 0 and "champion v7" in promoted.stdout
    back = as_json(vigil(server, "rollback", "breast_cancer", "--json", role="operator"))
    assert back["champion"]["version"] == "v1" and back.get("canary") is None

    audit = as_json(vigil(server, "audit", "--limit", "10", "--json", role="viewer"))
    actions = [i["action"] for i in audit["items"]]
    assert actions[:4] == ["deployments.rollback", "deployments.promote", "deployments.patch",
                           "models.register"]
    assert audit["items"][0]["actor"] == "operator-token"
    assert TOKENS["operator"] not in json.dumps(audit)
    table = vigil(server, "audit", "--limit", "3", role="viewer")
    assert table.exit_code == 0 and "deployments.rollback" in table.stdout
    narrow = vigil(server, "audit", "--limit", "3", role="viewer", columns=80)
    assert narrow.exit_code == 0 and "…" not in narrow.stdout  # folded, never cut short
    assert max(map(len, narrow.stdout.splitlines())) <= 80 and "operator-token" in narrow.stdout

    drift = as_json(vigil(server, "drift", "show", "breast_cancer", "--json", role="viewer"))
    assert drift["version"] == "v1" and "signals" in drift


def test_exit_codes_a_pipeline_can_branch_on(server: Server) -> None:
    wrong = vigil(server, "models", "list", token="not-a-token")
    assert wrong.exit_code == EXIT_AUTH and "401" in wrong.stderr
    assert "not-a-token" not in wrong.output
    viewer = vigil(server, "promote", "breast_cancer", role="viewer")
    assert viewer.exit_code == EXIT_AUTH and "403" in viewer.stderr
    missing = vigil(server, "models", "show", "nope", "v1", role="viewer")
    assert missing.exit_code == EXIT_NOT_FOUND and "not found" in missing.stderr
    invalid = vigil(server, "deploy", "canary", "breast_cancer", "v9", role="operator")
    assert invalid.exit_code in (EXIT_INVALID, EXIT_NOT_FOUND) and invalid.stderr.strip()
    stopped = vigil(server, "status", url=f"http://127.0.0.1:{free_port()}")
    assert stopped.exit_code == EXIT_UNREACHABLE and "cannot reach" in stopped.stderr
    assert "Traceback" not in wrong.output + missing.output + stopped.output


def test_config_check_names_what_is_wrong(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    good = CliRunner().invoke(app, ["config", "check", "--config", "vigil.yaml"])
    assert good.exit_code == 0 and good.stdout.startswith("ok:")
    bad = tmp_path / "bad.yaml"
    bad.write_text("limits:\n  max_rows: -1\nserver:\n  wokers: 2\n")
    monkeypatch.setenv("VIGIL_CONFIG", str(bad))  # restored after the test
    result = CliRunner().invoke(app, ["config", "check", "--config", str(bad)])
    assert result.exit_code == EXIT_INVALID
    assert "limits.max_rows" in result.stderr and "server.wokers" in result.stderr


def test_a_server_with_a_bad_config_stops_with_what_is_wrong(tmp_path: Path) -> None:
    """``bentoml serve`` on a bad setting exits 2 naming it and where it came from, in a line
    rather than a traceback through BentoML's CLI; a YAML syntax error names the file."""
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("limits: {max_rows: [1\n")
    bentoml = Path(sys.executable).with_name("bentoml")
    for extra, says in (({"VIGIL_LIMITS__MAX_ROWS": "s3cret-7731"},
                         ["limits.max_rows", "(from VIGIL_LIMITS__MAX_ROWS)"]),
                        ({"VIGIL_CONFIG": str(bad_yaml)}, [str(bad_yaml), "line 1"])):
        env = {**os.environ, "VIGIL_DATA_DIR": str(tmp_path / "data"),
               "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
               **extra}
        run = subprocess.run([str(bentoml), "serve", "service.gateway:Gateway", "--port",
                              str(free_port())], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 2, run.stderr[-2000:]
        assert run.stderr.startswith("vigil: invalid configuration"), run.stderr[-2000:]
        assert "Traceback" not in run.stderr and all(s in run.stderr for s in says)
        assert "s3cret" not in run.stderr  # a variable's value may be a secret: never shown
        assert len(run.stderr.splitlines()) < 10


def test_rollout_commands(server: Server) -> None:
    started = as_json(vigil(server, "rollout", "start", "breast_cancer", "v2", "--steps",
                            "0.1,0.5,1", "--min-seconds", "600", "--json", role="operator"))
    assert started["state"]["status"] == "running" and started["spec"]["steps"] == [0.1, 0.5, 1]
    paused = vigil(server, "rollout", "pause", "breast_cancer", role="operator")
    assert paused.exit_code == 0 and "paused" in paused.stdout
    assert vigil(server, "rollout", "pause", "breast_cancer",
                 role="operator").exit_code == 6  # already paused: a conflict
    status = as_json(vigil(server, "rollout", "status", "breast_cancer", "--json",
                           role="viewer"))
    assert status["state"]["status"] == "paused"
    aborted = as_json(vigil(server, "rollout", "abort", "breast_cancer", "--json",
                            role="operator"))
    assert aborted["state"]["status"] == "aborted"
    assert vigil(server, "rollout", "status", "diabetes", role="viewer").exit_code == \
        EXIT_NOT_FOUND
