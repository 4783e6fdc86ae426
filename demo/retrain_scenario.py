"""`make demo`: drift to a signed retraining webhook, end to end, on this machine.

Starts a webhook receiver (it verifies every signature with the `standardwebhooks` library)
and the gateway, both on 127.0.0.1, then sends clean traffic, then traffic with one feature
shifted by one standard deviation, and shows: the drift alarm, the signed retraining webhook
arriving, and a second identical alarm inside the cooldown not firing again. Stops by itself.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from standardwebhooks import Webhook

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from load_tests.servers import serve, server_env, stop  # noqa: E402

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
ADMIN = "demo-admin-token"
received: list[dict[str, Any]] = []


class Receiver(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            event = Webhook(SECRET).verify(body, headers)
            ok = True
        except Exception as exc:  # a bad signature is refused, as a real receiver would
            event, ok = {"error": str(exc)}, False
        received.append({"id": headers.get("webhook-id"), "verified": ok, "event": event})
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()


def say(text: str) -> None:
    print(f"\n\033[1m▶ {text}\033[0m", flush=True)


def infer(c: httpx.Client, rows: np.ndarray) -> None:
    for i in range(0, len(rows), 100):
        chunk = rows[i:i + 100]
        c.post("/v2/models/breast_cancer/infer", json={"inputs": [
            {"name": "X", "shape": list(chunk.shape), "datatype": "FP64",
             "data": chunk.tolist()}]}).raise_for_status()


def wait(what: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.5)
    return None


def main() -> None:
    rx = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=rx.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{rx.server_address[1]}/retrain"
    tmp = Path(tempfile.mkdtemp(prefix="vigil-demo-"))
    env = server_env(tmp, {
        "VIGIL_BOOTSTRAP_ADMIN_TOKEN": ADMIN, "VIGIL_DEMO_WEBHOOK_SECRET": SECRET,
        "VIGIL_MONITOR__TICK_SECONDS": "0.25",
        "VIGIL_WEBHOOKS__TARGETS": json.dumps([{"name": "retrain-pipeline", "type": "generic",
                                                "url": hook,
                                                "secret_env": "VIGIL_DEMO_WEBHOOK_SECRET"}]),
        "VIGIL_POLICIES": json.dumps({"breast_cancer": {"drift_signals": ["input_mean",
                                                                         "input_scale"],
                                                        "cooldown_seconds": 3600}})})
    say(f"starting the gateway (2 workers + Monitor) and a webhook receiver at {hook}")
    proc, url = serve("service.gateway:Gateway", env, tmp / "server.log")
    h = {"Authorization": f"Bearer {ADMIN}"}
    try:
        reference = pd.read_csv(ROOT / "models/demo/artifacts/breast_cancer/v1/reference.csv")
        rng = np.random.default_rng(7)
        with httpx.Client(base_url=url, timeout=30) as c:
            say("600 rows of clean traffic to breast_cancer v1")
            infer(c, reference.to_numpy()[rng.integers(0, len(reference), 600)])
            time.sleep(1.5)
            d = c.get("/admin/drift/breast_cancer", headers=h).json()
            print(f"  rows seen by the champion v1: {d['rows_seen']} (the 10% canary v2 took the "
                  f"rest); open alarms: {len(d['active_alarms'])}")

            say("600 rows with 'mean texture' shifted by +1σ")
            moved = reference.to_numpy()[rng.integers(0, len(reference), 600)].copy()
            moved[:, list(reference.columns).index("mean texture")] += \
                reference["mean texture"].std()
            infer(c, moved)
            alarm = wait(lambda: next(iter(c.get("/admin/drift/breast_cancer", headers=h)
                                           .json()["active_alarms"]), None))
            top = ", ".join(f"{f['feature']} {f['ratio']:.2f}" for f in alarm["features"][:3])
            print(f"  DRIFT ALARM {alarm['signal']} after row {alarm['rows']}: {top}")

            say("the retraining webhook")
            got = wait(lambda: [r for r in received
                                if r["event"].get("type") == "vigil.retrain.requested"])
            r = got[0]
            data = r["event"]["data"]
            print(f"  received {r['id']}  signature verified: {r['verified']}")
            lineage = data["lineage"]
            print(f"  reason {data['reason']}, champion {data['champion_version']}, dataset "
                  f"{lineage['dataset_sha256'][:12]}…, code {lineage['code_commit']}")

            say("acknowledge, drift again: a second alarm inside the cooldown")
            c.post("/admin/drift/breast_cancer/ack", headers=h).raise_for_status()
            infer(c, moved)
            second = wait(lambda: c.get("/admin/drift/breast_cancer", headers=h)
                          .json()["active_alarms"])
            time.sleep(3)
            n = len([r for r in received if r["event"].get("type") ==
                     "vigil.retrain.requested"])
            print(f"  second alarm {second[0]['signal']} (id {second[0]['id']}); retraining "
                  f"webhooks received in all: {n} (cooldown 1 h)")
            deliveries = c.get("/admin/webhooks/deliveries", headers=h).json()["items"]
            for d in deliveries:
                print(f"  delivery {d['id']} → {d['target']}: {d['status']} after "
                      f"{d['attempts']} attempt(s)")
    finally:
        stop(proc)
        rx.shutdown()
    say(f"done (the server's log and data are in {tmp})")


if __name__ == "__main__":
    main()
