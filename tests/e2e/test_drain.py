"""Graceful drain on SIGTERM to the server (what Kubernetes and ``docker stop`` send to PID 1),
under load: readiness turns false first while predictions keep being answered, then the
server stops, every acknowledged prediction is in the log (all segments closed), and the
Monitor's last tick has counted them all."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter

import httpx
import orjson
import pytest

from monitoring.monitor import read_stats
from store.engine import make_engine
from tests.e2e.conftest import start_server, stop_server
from tests.e2e.test_log_faults import Load, segment_files

pytestmark = pytest.mark.e2e
DRAIN_SECONDS = 2.0


class Probe:
    """A load balancer's readiness probe: a new connection every 20 ms, answers noted."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[tuple[float, int | str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                status: int | str = httpx.get(f"{self.url}/readyz", timeout=2).status_code
            except httpx.TransportError:
                status = "refused"
            self.seen.append((time.monotonic(), status))

    def first(self, status: int | str) -> float | None:
        return next((t for t, s in self.seen if s == status), None)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def test_sigterm_turns_readiness_false_first_then_drains_flushes_and_checkpoints(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    proc, srv = start_server(tmp_path_factory.mktemp("vigil-drain"),
                             {"VIGIL_SERVER__DRAIN_SECONDS": str(DRAIN_SECONDS)})
    try:
        probe = Probe(srv.url)
        load = Load(srv.url, threads=4)
        time.sleep(1.5)
        assert probe.seen and all(s == 200 for _, s in probe.seen)
        term_at = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)  # the arbiter only, as an orchestrator does
        proc.wait(timeout=60)
        load.stop()
        probe.stop()
    except BaseException:
        stop_server(proc)
        raise
    assert proc.returncode is not None

    # readiness went false first, and predictions were still answered after that
    unready = probe.first(503)
    assert unready is not None and unready >= term_at, probe.seen[-20:]
    refused = probe.first("refused")
    assert refused is None or unready < refused
    served_while_draining = [t for t, _ in load.acked if t > unready]
    assert len(served_while_draining) > 20, (len(load.acked), unready - term_at)

    # every acknowledged prediction is in a closed segment, once
    files = segment_files(srv.data_dir)
    assert files and all(p.suffix == ".jsonl" for p in files), [p.name for p in files]
    records = [orjson.loads(line) for p in files for line in p.read_bytes().splitlines()]
    logged = [r["data"]["request_id"] for r in records]
    assert len(logged) == len(set(logged))
    acked = {rid for _, rid in load.acked}
    assert acked <= set(logged), f"{len(acked - set(logged))} acknowledged records lost"

    # the Monitor's last tick read them all and committed its checkpoint
    stats = read_stats(make_engine(f"sqlite:///{srv.data_dir / 'vigil.db'}"), "diabetes")
    counted = {(v, var): x["requests"] for v, d in stats["versions"].items()
               for var, x in d.items()}
    assert counted == Counter((r["data"]["version"], r["data"]["variant"]) for r in records)
    assert stats["monitor"]["lag_events"] == 0
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
