"""SIGKILL of the whole server (arbiter, both Gateway workers and the Monitor at once) at a
seeded random point under load, then a restart on the same data directory: no acknowledged
prediction missing beyond the loss window, no record written or counted twice, a retraining
webhook that was pending at the kill is delivered after the restart with its webhook-id, and
the rollout in progress is where it was.

`make test` runs one seed; `make soak` runs more (``VIGIL_FAULT_SEEDS=1,2,3,4,5``)."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from typing import Any

import httpx
import psutil
import pytest

from load_tests.servers import descendants
from monitoring.log.frames import LogKeys
from tests.e2e.conftest import monitor_counts, start_server, stop_server
from tests.e2e.test_log_faults import (
    ENCRYPTION,
    LOG_KEY,
    LOSS_WINDOW_SECONDS,
    ROW,
    Load,
    logged_records,
    segment_files,
)
from tests.e2e.test_monitoring import wait_for
from tests.receivers import receiver

pytestmark = pytest.mark.e2e
SEEDS = [int(s) for s in os.environ.get("VIGIL_FAULT_SEEDS", "1").split(",")]
SECRET = "whsec_Y3Jhc2gtcmVzdGFydC1zZWNyZXQtYnl0ZXM="


@pytest.mark.parametrize("at_rest", sorted(ENCRYPTION))
@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_of_the_whole_server_then_restart_loses_and_doubles_nothing(
        tmp_path_factory: pytest.TempPathFactory, seed: int, at_rest: str) -> None:
    rng = random.Random(seed)
    keys = LogKeys.from_config(LOG_KEY) if at_rest == "encrypted" else None
    data_dir = tmp_path_factory.mktemp(f"vigil-crash-{seed}")
    with receiver([(503, {})]) as rx:
        env = {"VIGIL_CRASH_WH_SECRET": SECRET, **ENCRYPTION[at_rest],
               "VIGIL_WEBHOOKS__TARGETS": json.dumps([{
                   "name": "retrain", "type": "generic", "url": rx.url + "/hook",
                   "secret_env": "VIGIL_CRASH_WH_SECRET"}]),
               "VIGIL_WEBHOOKS__DISPATCH_SECONDS": "0.25",
               "VIGIL_WEBHOOKS__SCHEDULE_SECONDS": "[0, 0.5, 1, 1, 1, 1, 1, 1, 1, 1]",
               "VIGIL_WEBHOOKS__JITTER": "0"}
        proc, srv = start_server(data_dir, env)
        try:
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                r = c.post("/admin/rollouts/breast_cancer", headers=srv.headers("operator"),
                           json={"candidate": "v2", "steps": [0.25, 1.0],
                                 "min_seconds": 3600, "max_wait_seconds": 7200})
                assert r.status_code == 201, r.text
                r = c.post("/admin/webhooks/retrain/test", headers=srv.headers("operator"))
                assert r.status_code == 202, r.text
                event_id = r.json()["event_id"]
                assert wait_for(lambda: len(rx.received), lambda n: n >= 1, timeout=30)
                load = Load(srv.url, threads=4)
                time.sleep(rng.uniform(1.0, 3.0))
                rollout = c.get("/admin/rollouts/breast_cancer",
                                headers=srv.headers("viewer")).json()
                everything = [psutil.Process(proc.pid), *descendants(proc.pid)]
                assert len(everything) == 4  # arbiter, 2 Gateway workers, the Monitor
                killed_at = time.monotonic()
                for p in everything:  # the whole server at once, as a container kill does
                    p.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                psutil.wait_procs(everything, timeout=30)
                load.stop()
        except BaseException:
            stop_server(proc)
            raise
        assert len(load.acked) > 100

        rx.script = [(200, {})]  # the target recovers while the server is down
        proc, srv = start_server(data_dir, env)
        try:
            records = logged_records(data_dir, keys)
            ids = [r["data"]["request_id"] for r in records]
            assert len(ids) == len(set(ids)), "a record was written twice"
            before = {rid for t, rid in load.acked if t < killed_at - LOSS_WINDOW_SECONDS}
            missing = before - set(ids)
            assert not missing, f"{len(missing)} acknowledged records lost"

            diabetes = Counter((r["data"]["version"], r["data"]["variant"]) for r in records
                               if r["data"]["model"] == "diabetes")

            assert wait_for(lambda: monitor_counts(srv, "diabetes"),
                            lambda got: got == diabetes, timeout=60) == diabetes

            def delivered() -> list[Any]:
                return [x for x in rx.received if x.headers.get("webhook-id") == event_id]

            got = wait_for(delivered, lambda xs: len(xs) >= 2, timeout=60)
            assert len(got) >= 2 and {x.headers["webhook-id"] for x in rx.received} == {
                event_id}

            def statuses() -> list[str]:  # the receiver records a request before the
                # dispatcher has read its answer and committed the attempt
                items = httpx.get(f"{srv.url}/admin/webhooks/deliveries",
                                  headers=srv.headers("viewer"), timeout=10).json()["items"]
                return [d["status"] for d in items if d["event_id"] == event_id]

            assert wait_for(statuses, lambda s: s != ["pending"], timeout=30) == ["delivered"]

            after = httpx.get(f"{srv.url}/admin/rollouts/breast_cancer",
                              headers=srv.headers("viewer"), timeout=10).json()
            assert after["spec"] == rollout["spec"]
            assert (after["state"]["status"], after["state"]["step"]) == (
                rollout["state"]["status"], rollout["state"]["step"]) == ("running", 0)
        finally:
            stop_server(proc)


def test_workers_and_the_monitor_stop_by_themselves_when_the_server_process_is_killed(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """SIGKILL of the arbiter alone (the OOM killer's pick): circus gives each worker its own
    session, so nothing else gets the signal — each notices its parent is gone and stops
    gracefully, closing its log segment, instead of serving on as an orphan."""
    proc, srv = start_server(tmp_path_factory.mktemp("vigil-orphans"))
    children = descendants(proc.pid)
    try:
        assert len(children) == 3
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            for _ in range(20):
                assert c.post("/predict", json={"model": "diabetes", **ROW}).status_code == 200
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, [p.pid for p in alive]
    finally:
        stop_server(proc)
    files = segment_files(srv.data_dir)
    assert files and all(p.suffix == ".jsonl" for p in files), [p.name for p in files]
