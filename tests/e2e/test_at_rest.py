"""The prediction log encrypted at rest and personal data kept out of it, on a real server:
sentinel values sent in 1,000 predictions appear nowhere in clear (every file under the data
directory, /metrics, the audit, the server log), the Monitor's counts are exact, the export
decrypts to the same rows, hashed values are equal for equal inputs, and a wrong key stops the
next start with a clear error."""

from __future__ import annotations

import json
import struct
import time
from collections import Counter
from pathlib import Path

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from load_tests.servers import ROOT
from monitoring.log.frames import LogKeys
from monitoring.log.pii import Redactor
from service.cli import app
from tests.e2e.conftest import monitor_counts, start_server, stop_server
from tests.e2e.test_log_faults import LOG_KEY, logged_records
from tests.e2e.test_monitoring import wait_for

pytestmark = pytest.mark.e2e
DEMO = ROOT / "models" / "demo" / "artifacts" / "diabetes" / "v1"
HASH_KEY = "3q0kQ4sY0b8cB2aU8yq1mXr6wX9pL2eN5vH7tJ0zK4c="
# inside the card's ranges, and exact in float32 too: written the same whatever the dtype
BMI, AGE, SEX = 203 / 16384, 385 / 16384, 567 / 16384
RID = "customer-4711@example.org"  # a request id a client chose
ROW = {"age": 0.03, "sex": 0.05, "bmi": 0.06, "bp": 0.02, "s1": -0.04, "s2": -0.03,
       "s3": -0.04, "s4": 0.0, "s5": 0.02, "s6": -0.02}
SENTINELS = [repr(BMI).encode(), repr(AGE).encode(), repr(SEX).encode(), RID.encode(),
             *(struct.pack(f"{e}{t}", v) for e in "<>" for t in "df" for v in (BMI, AGE, SEX))]


def files_under(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file() and not p.is_symlink()]


def clear_hits(data: bytes) -> list[bytes]:
    return [s for s in SENTINELS if s in data]


def test_sentinels_never_reach_disk_metrics_audit_or_server_log(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    data_dir = tmp_path_factory.mktemp("vigil-at-rest")
    env = {"VIGIL_LOG__ENCRYPTION__KEY": LOG_KEY, "VIGIL_LOG__HASH_KEY": HASH_KEY,
           "VIGIL_LOG__HASH_ROUTING_KEYS": "true"}
    proc, srv = start_server(data_dir, env)
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            card = json.loads((DEMO / "card.json").read_text())
            card["version"] = "v2"
            for f in card["inputs"]:
                f["pii"] = {"age": "drop", "sex": "hash"}.get(f["name"], "keep")
            r = c.post("/admin/models/diabetes/versions", headers=srv.headers("admin"),
                       data={"card": json.dumps(card)},
                       files={"model": (DEMO / "model.onnx").read_bytes(),
                              "reference": ("reference.csv",
                                            (DEMO / "reference.csv").read_bytes())})
            assert r.status_code == 201, r.text
            admin = srv.headers("admin")

            def patch(doc: dict) -> httpx.Response:
                rev = c.get("/admin/deployments/diabetes", headers=admin).json()["revision"]
                return c.patch("/admin/deployments/diabetes", json=doc,
                               headers={**admin, "If-Match": str(rev)})

            for i in range(1000):  # v1 alone (all kept), then v2 beside it (its marks apply)
                if i == 500:
                    assert patch({"canary": {"version": "v2", "weight": 0.5}}).status_code == 200
                    time.sleep(1.0)  # every worker has the new revision
                row = {**ROW, "bmi": BMI, "age": AGE, "sex": SEX if i % 2 else 0.05}
                r = c.post("/predict", json={"model": "diabetes", "inputs": [row]},
                           headers={"X-Request-ID": RID} if i == 0 else {})
                assert r.status_code == 200, r.text
            assert c.post("/feedback", headers=srv.headers("feedback"), json={
                "model": "diabetes", "request_id": RID, "value": 151.0}).status_code == 202
            keys = LogKeys.from_config(LOG_KEY)
            records = wait_for(lambda: logged_records(data_dir, keys),
                               lambda rs: sum(r["type"].endswith("prediction.v1")
                                              for r in rs) >= 1000, timeout=30)
            predictions = [r for r in records if r["type"].endswith("prediction.v1")]
            expected = Counter((r["data"]["version"], r["data"]["variant"])
                               for r in predictions)
            assert wait_for(lambda: monitor_counts(srv, "diabetes"),
                            lambda got: got == expected, timeout=60) == expected
            drift = wait_for(lambda: c.get("/admin/drift/diabetes?version=v2",
                                           headers=srv.headers("viewer")).json(),
                             lambda d: bool(d.get("unmonitored")), timeout=30)
            assert drift["unmonitored"] == {"age": "pii: drop", "sex": "pii: hash"}
            assert "age" not in drift["psi"] and "sex" not in drift["psi"]
            scraped = c.get("/metrics").content
            audit = c.get("/admin/audit", headers=srv.headers("viewer")).content
        # the log holds what was sent, less the personal data
        # the log holds what was sent, less the personal data once v2 (which marks it) serves
        inputs = [r["data"]["inputs"][0] for r in sorted(predictions, key=lambda r: r["time"])]
        before, after = inputs[:500], inputs[500:]
        assert {(x["bmi"], x["age"], x["sex"]) for x in before} == {(BMI, AGE, SEX),
                                                                   (BMI, AGE, 0.05)}
        assert {r["data"]["version"] for r in predictions} == {"v1", "v2"}
        assert all("age" not in x for x in after) and {x["bmi"] for x in after} == {BMI}
        redactor = Redactor(keys_hash())
        hashed = Counter(x["sex"] for x in after)  # equal in, equal out: they still group
        assert hashed == {redactor.hash(SEX): 250, redactor.hash(0.05): 250}
        ids = {r["data"]["request_id"] for r in records}
        assert RID not in ids and Redactor(keys_hash()).hash(RID) in ids
        # the export decrypts to the same rows
        out = tmp_path / "preds.parquet"
        result = CliRunner(env={"VIGIL_DATA_DIR": str(data_dir),
                                "VIGIL_LOG__ENCRYPTION__KEY": LOG_KEY}).invoke(
            app, ["logs", "export", "--model", "diabetes", "--out", str(out)])
        assert result.exit_code == 0, result.output
        df = pd.read_parquet(out)
        assert len(df) == len(predictions) == 1000
        assert df["input.age"].notna().sum() == 500 and set(df["input.bmi"]) == {BMI}
    finally:
        stop_server(proc)
    for where, data in (("/metrics", scraped), ("the audit", audit),
                        ("the server log", srv.log.read_bytes())):
        assert not clear_hits(data), f"a sentinel in {where}"
    for path in files_under(data_dir):
        assert not clear_hits(path.read_bytes()), f"a sentinel in clear in {path}"

    # a wrong key (the old one forgotten) stops the next start, naming the segment
    with pytest.raises(RuntimeError, match="sealed by key id"):
        start_server(data_dir, {**env, "VIGIL_LOG__ENCRYPTION__KEY":
                                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="})


def keys_hash() -> bytes:
    import base64

    return base64.b64decode(HASH_KEY)
