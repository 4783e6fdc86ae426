"""Drift end to end: clean then drifted traffic to a real 2-worker server; the alarm names the
feature that moved; operators acknowledge it and rebaseline (its own server: drift state must
not see other tests' traffic)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.conftest import DEMO
from tests.e2e.conftest import Server, start_server, stop_server
from tests.e2e.test_cli import vigil
from tests.e2e.test_monitoring import wait_for

pytestmark = pytest.mark.e2e
MOVED = "mean texture"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    proc, srv = start_server(tmp_path_factory.mktemp("vigil-drift"))
    yield srv
    stop_server(proc)


def send(c: httpx.Client, rows: np.ndarray) -> None:
    for i in range(0, len(rows), 100):
        chunk = rows[i:i + 100]
        r = c.post("/v2/models/breast_cancer/versions/v1/infer", json={"inputs": [
            {"name": "X", "shape": list(chunk.shape), "datatype": "FP64",
             "data": chunk.tolist()}]})
        assert r.status_code == 200, r.text


def drift(c: httpx.Client, srv: Server, version: str = "v1") -> dict[str, Any]:
    r = c.get(f"/admin/drift/breast_cancer?version={version}", headers=srv.headers("viewer"))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_a_mean_shift_raises_an_alarm_naming_the_feature(server: Server) -> None:
    reference = pd.read_csv(DEMO / "breast_cancer" / "v1" / "reference.csv")
    rng = np.random.default_rng(17)
    clean = reference.to_numpy()[rng.integers(0, len(reference), 1200)]
    moved = reference.to_numpy()[rng.integers(0, len(reference), 1500)].copy()
    j = list(reference.columns).index(MOVED)
    moved[:, j] += reference[MOVED].std()  # +1σ in one feature of 30

    with httpx.Client(base_url=server.url, timeout=30) as c:
        send(c, clean)
        state = wait_for(lambda: drift(c, server), lambda d: d["rows_seen"] >= 1200)
        assert state["rows_seen"] == 1200
        assert state["active_alarms"] == []  # clean traffic: quiet
        assert set(state["psi"]) == set(reference.columns)
        assert state["signals"]["input_mean"]["max_ratio"] < 1

        send(c, moved)

        def alarmed(d: dict[str, Any]) -> bool:
            return any(a["signal"] == "input_mean" for a in d["active_alarms"])

        state = wait_for(lambda: drift(c, server), alarmed)
        alarm = next(a for a in state["active_alarms"] if a["signal"] == "input_mean")
        assert alarm["features"][0]["feature"] == MOVED
        assert 1200 < alarm["rows"] <= 1200 + 1500 and alarm["score"] >= 1
        assert state["signals"]["input_mean"]["alarm_active"]
        # PSI is over the last 1,000 rows: read it once every moved row is in (at the alarm
        # the window may hold 100 moved rows, where another feature's noise still leads)
        state = wait_for(lambda: drift(c, server), lambda d: d["rows_seen"] >= 1200 + 1500)
        assert max(state["psi"], key=state["psi"].get) == MOVED
        assert state["psi"][MOVED] > 1.0

        # an operator acknowledges; a viewer may not
        assert c.post("/admin/drift/breast_cancer/ack",
                      headers=server.headers("viewer")).status_code == 403
        r = c.post("/admin/drift/breast_cancer/ack?version=v1",
                   headers=server.headers("operator"))
        assert r.status_code == 200 and alarm["id"] in r.json()["acknowledged"]
        assert not any(a["signal"] == "input_mean" for a in drift(c, server)["active_alarms"])
        audit = c.get("/admin/audit?action=drift.ack", headers=server.headers("viewer")).json()
        assert audit["items"][0]["actor"] == "operator-token"

        # rebaseline on the shifted traffic: its rows become the reference
        r = c.post("/admin/drift/breast_cancer/rebaseline?version=v1&rows=1000",
                   headers=server.headers("operator"))
        assert r.status_code == 202, r.text
        state = wait_for(lambda: drift(c, server),
                         lambda d: d["rebaselines"] and d["rebaselines"][0]["done_at"])
        assert state["rebaselines"][0]["outcome"].startswith("done")
        assert state["reference"]["source"].startswith("rebaseline")
        assert state["reference"]["rows"] == 1000


def test_a_correlation_flip_raises_the_joint_signal_naming_a_moved_pair(
        server: Server) -> None:
    """After the test above's rebaseline: rows drawn as that reference was (+1σ in one
    feature), then columns 0–14 of each row paired with 15–29 of another. Every feature's
    distribution stays; only how they move together changes."""
    reference = pd.read_csv(DEMO / "breast_cancer" / "v1" / "reference.csv")
    names = list(reference.columns)
    rng = np.random.default_rng(23)

    def rows(n: int) -> np.ndarray:
        x = reference.to_numpy()[rng.integers(0, len(reference), n)].copy()
        x[:, names.index(MOVED)] += reference[MOVED].std()
        return x
    mispaired = np.concatenate([rows(600)[:, :15], rows(600)[:, 15:]], axis=1)

    with httpx.Client(base_url=server.url, timeout=30) as c:
        before = drift(c, server)
        assert before["reference"]["source"].startswith("rebaseline")
        assert "input_joint" in before["signals"]
        send(c, mispaired)

        def alarmed(d: dict[str, Any]) -> bool:
            return any(a["signal"] == "input_joint" for a in d["active_alarms"])

        state = wait_for(lambda: drift(c, server), alarmed)
        alarm = next(a for a in state["active_alarms"] if a["signal"] == "input_joint")
        top = alarm["features"][0]
        a, b = (names.index(f) for f in top["pair"])
        assert (a < 15) != (b < 15), top  # a pair across the two halves
        assert top["feature"] == f"{top['pair'][0]}~{top['pair'][1]}"
        assert abs(top["corr_live"] - top["corr_reference"]) > 0.3
        assert alarm["rows"] <= before["rows_seen"] + 200 and alarm["score"] >= 1
        joint = state["signals"]["input_joint"]
        assert joint["alarm_active"] and joint["pairs"][0]["pair"] == top["pair"]

    shown = vigil(server, "drift", "show", "breast_cancer", role="viewer")
    assert shown.exit_code == 0, shown.output
    line = next(x for x in shown.stdout.splitlines() if "input_joint" in x)
    assert top["feature"] in line and "open" in line

    def joint_open(text: str) -> bool:
        return any(x.startswith("vigil_drift_alarm_active{") and 'signal="input_joint"' in x
                   and x.endswith(" 1.0") for x in text.splitlines())
    assert joint_open(wait_for(lambda: httpx.get(f"{server.url}/metrics").text, joint_open))


def test_drift_errors(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        h = server.headers("operator")
        assert c.get("/admin/drift/nope", headers=h).status_code == 404
        assert c.get("/admin/drift/breast_cancer?version=v9", headers=h).status_code == 404
        r = c.post("/admin/drift/breast_cancer/ack?signal=vibes", headers=h)
        assert r.status_code == 422 and r.json()["field"] == "signal"
        r = c.post("/admin/drift/breast_cancer/rebaseline?rows=999999", headers=h)
        assert r.status_code == 422 and r.json()["field"] == "rows"
        assert c.get("/admin/drift/breast_cancer").status_code == 401
