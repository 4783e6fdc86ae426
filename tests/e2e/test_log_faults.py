"""Faults against a real server: SIGKILL of a Gateway worker and of the Monitor mid-load, and
a log directory that cannot be written. Each test runs its own server. The kill test runs with
the log in clear and encrypted at rest: the guarantees are the same."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import pytest

from monitoring.log.frames import LogKeys, Opener, is_framed, split
from monitoring.log.reader import SEGMENT_RE, pid_alive
from tests.e2e.conftest import monitor_counts, start_server, stop_server
from tests.e2e.test_monitoring import wait_for

pytestmark = pytest.mark.e2e
ROW = {"instances": [[0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.02]]}
# A process crash loses only what was still queued in memory (the writer takes the queue every
# 50 ms); allow ten times that before the kill, for a loaded CI machine.
LOSS_WINDOW_SECONDS = 0.5


def workers(proc_pid: int, service: str) -> list[psutil.Process]:
    out = []
    for child in psutil.Process(proc_pid).children(recursive=True):
        try:
            cmd = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "--service-name" in cmd and cmd[cmd.index("--service-name") + 1] == service:
            out.append(child)
    return out


def stable_for(seconds: float) -> Callable[[int], bool]:
    """A ``wait_for`` predicate: true once the value has not changed for ``seconds``."""
    seen: dict[str, Any] = {"value": None, "since": 0.0}

    def check(value: int) -> bool:
        now = time.monotonic()
        if value != seen["value"]:
            seen.update(value=value, since=now)
        return now - seen["since"] >= seconds

    return check


def log_bytes(data_dir: Path) -> int:
    total = 0
    for path in segment_files(data_dir):
        try:
            total += path.stat().st_size
        except FileNotFoundError:  # renamed from .open to .jsonl meanwhile
            return -1
    return total


def segment_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "log").iterdir() if SEGMENT_RE.match(p.name))


LOG_KEY = "q1Fq+0mVuY3m6cJxgk3Pt7Vt2wI8n0p9ZV0w8mS3C7A="  # a test key: 32 bytes, base64
ENCRYPTION = {"clear": {}, "encrypted": {"VIGIL_LOG__ENCRYPTION__KEY": LOG_KEY}}


def logged_records(data_dir: Path, keys: LogKeys | None = None) -> list[dict[str, Any]]:
    """Every complete record on disk, lines or frames (opened with ``keys``); a torn last
    line or frame only in a dead writer's open segment, and no frame that fails."""
    records: list[dict[str, Any]] = []
    opener = Opener(keys)
    for path in segment_files(data_dir):
        data = path.read_bytes()
        if is_framed(data):
            assert keys is not None, f"{path.name} is encrypted"
            frames, end, skipped = split(data)
            assert not skipped
            for frame in frames:
                record = opener.open(frame)
                assert record is not None, f"{path.name}: a frame failed at {frame.offset}"
                records.append(orjson.loads(record))
        else:
            assert keys is None or not data, f"{path.name} is in clear"
            end = data.rfind(b"\n") + 1
            records += [orjson.loads(line) for line in data[:end].splitlines()]
        if end < len(data):
            assert path.suffix == ".open"
            assert not pid_alive(int(path.name.split("-")[1]))
    return records


class Load:
    """Threads that each keep one connection and post until stopped, noting every 200."""

    def __init__(self, url: str, threads: int = 6) -> None:
        self.url = url
        self.acked: list[tuple[float, str]] = []
        self.failed = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k,)) for k in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self, k: int) -> None:
        deadline = time.monotonic() + 120  # stops by itself even if the test does not
        with httpx.Client(base_url=self.url, timeout=10) as c:
            i = 0
            while not self._stop.is_set() and time.monotonic() < deadline:
                i += 1
                try:
                    r = c.post("/predict", json={"model": "diabetes", **ROW},
                               headers={"X-Routing-Key": f"t{k}-{i}"})
                except httpx.TransportError:  # the killed worker's connections reset
                    self.failed += 1
                    continue
                if r.status_code == 200:
                    self.acked.append((time.monotonic(), r.json()["request_id"]))
                else:
                    self.failed += 1

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


@pytest.mark.parametrize("at_rest", sorted(ENCRYPTION))
def test_sigkill_of_a_worker_and_of_the_monitor_loses_and_doubles_nothing(
        tmp_path_factory: pytest.TempPathFactory, at_rest: str) -> None:
    keys = LogKeys.from_config(LOG_KEY) if at_rest == "encrypted" else None
    proc, srv = start_server(tmp_path_factory.mktemp("vigil-faults"),
                             {"VIGIL_LOG__FSYNC_SECONDS": "0.1", **ENCRYPTION[at_rest]})
    try:
        load = Load(srv.url)
        time.sleep(2.0)
        # kill the Gateway worker that has written the most
        sizes: Counter[int] = Counter()
        for path in segment_files(srv.data_dir):
            sizes[int(path.name.split("-")[1])] += path.stat().st_size
        victim_pid = sizes.most_common(1)[0][0]
        gateway_pids = {p.pid for p in workers(proc.pid, "vigil")}
        assert victim_pid in gateway_pids
        killed_at = time.monotonic()
        os.kill(victim_pid, signal.SIGKILL)
        time.sleep(2.0)
        monitors = workers(proc.pid, "vigil-monitor")
        assert len(monitors) == 1
        # the Monitor yields the cores to the workers (monitor.nice, 10 by default)
        assert monitors[0].nice() == 10 and {p.nice() for p in workers(proc.pid, "vigil")} == {0}
        # and so does its scheduling group, where the kernel groups tasks by session
        # (the Monitor is alone in its session; a plain nice would not reach past it)
        groups = {p.pid: Path(f"/proc/{p.pid}/autogroup")
                  for p in [*monitors, *workers(proc.pid, "vigil")]}
        if all(g.exists() for g in groups.values()):
            nices = {pid: int(g.read_text().rsplit("nice", 1)[1]) for pid, g in groups.items()}
            assert nices.pop(monitors[0].pid) == 10 and set(nices.values()) == {0}
        old_monitor = monitors[0].pid
        os.kill(old_monitor, signal.SIGKILL)
        time.sleep(2.0)
        load.stop()
        assert len(load.acked) > 200

        # circus respawned both
        assert wait_for(lambda: {p.pid for p in workers(proc.pid, "vigil-monitor")},
                        lambda pids: bool(pids) and old_monitor not in pids, timeout=30)
        assert wait_for(lambda: len(workers(proc.pid, "vigil")), lambda n: n == 2,
                        timeout=30) == 2

        # the writers flush every 50 ms: read the log once it has stopped growing, or the
        # last answers' records land after the snapshot and the Monitor counts "extra" ones
        wait_for(lambda: log_bytes(srv.data_dir), stable_for(1.0), timeout=30)

        # every line (frame) parses, except a torn last one in a dead writer's open segment
        logged = logged_records(srv.data_dir, keys)
        logged_ids = [r["data"]["request_id"] for r in logged]
        assert len(logged_ids) == len(set(logged_ids))  # no record written twice

        # every request acknowledged before the loss window is in the log
        before = {rid for t, rid in load.acked if t < killed_at - LOSS_WINDOW_SECONDS}
        missing = before - set(logged_ids)
        assert not missing, f"{len(missing)} acknowledged records lost"
        lost_in_window = {rid for _, rid in load.acked} - set(logged_ids)
        print(f"acked {len(load.acked)}, logged {len(logged_ids)}, lost in the last "
              f"{LOSS_WINDOW_SECONDS} s before the kill: {len(lost_in_window)}")

        # after catch-up, the Monitor's counts equal the records in the log exactly
        expected = Counter((r["data"]["version"], r["data"]["variant"]) for r in logged)

        assert wait_for(lambda: monitor_counts(srv, "diabetes"),
                        lambda c: c == expected, timeout=60) == expected
        status = httpx.get(f"{srv.url}/admin/models/diabetes/stats",
                           headers=srv.headers("viewer"), timeout=10).json()["monitor"]
        assert status["lag_events"] == 0
    finally:
        stop_server(proc)


def test_an_unwritable_log_still_answers_and_counts_drops(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.mktemp("vigil-nolog")
    blocker = base / "not-a-dir"
    blocker.write_text("the log directory cannot be created under a file")
    proc, srv = start_server(base, {"VIGIL_LOG__DIR": str(blocker / "log")})
    try:
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            for _ in range(30):
                r = c.post("/predict", json={"model": "diabetes", **ROW})
                assert r.status_code == 200, r.text

            def dropped() -> float:
                text = c.get("/metrics").text
                series = 'vigil_prediction_log_dropped_total{reason="io_error"}'
                return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                           if line.startswith(series))

            assert wait_for(dropped, lambda n: n >= 30, timeout=20) >= 30
            r = c.post("/feedback", json={"model": "diabetes", "request_id": "x", "value": 1.0},
                       headers=srv.headers("feedback"))
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert "not writable" in r.json()["error"]
    finally:
        stop_server(proc)


def test_graceful_stop_closes_every_segment(tmp_path_factory: pytest.TempPathFactory) -> None:
    proc, srv = start_server(tmp_path_factory.mktemp("vigil-stop"))
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        ids = [c.post("/predict", json={"model": "diabetes", **ROW}).json()["request_id"]
               for _ in range(20)]
    stop_server(proc)
    files = segment_files(srv.data_dir)
    assert files and all(p.suffix == ".jsonl" for p in files)  # flushed, fsynced, renamed
    logged = {orjson.loads(line)["data"]["request_id"] for p in files
              for line in p.read_bytes().splitlines()}
    assert set(ids) <= logged
