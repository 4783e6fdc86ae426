"""`make soak`: a bounded mixed load against a real ``bentoml serve`` (2 workers + Monitor).

For ``--minutes`` (default 10) it sends, to 127.0.0.1 only and at a bounded rate:
predictions (1–8 rows, sticky routing keys), labels for most of them, admin reads as a
viewer, one drift episode (a feature shifted by +1σ through the middle tenth of the run) and
one progressive rollout of the canary. Every response is checked; resident memory of every
server process is sampled every 15 s. It reports errors, log drops, Monitor lag and memory at
minute 2 and at the end, writes ``load_tests/soak_results.md`` and exits 1 when a request
failed, a record was dropped, the Monitor did not catch up or memory grew more than 10%
between minute 2 and the end.

    python -m load_tests.soak --minutes 10 --out load_tests/soak_results.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from sklearn.datasets import load_breast_cancer

from load_tests.servers import ROOT

MODEL = "breast_cancer"
MEMORY_GROWTH_LIMIT = 0.10


@dataclass
class Report:
    minutes: float
    requests: Counter[str] = field(default_factory=Counter)  # kind → count
    errors: Counter[str] = field(default_factory=Counter)  # "kind status" → count
    variants: Counter[str] = field(default_factory=Counter)
    labels_accepted: int = 0
    dropped: float = 0.0
    lag_events_end: float = 0.0
    lag_seconds_max: float = 0.0
    drift_alarms: int = 0
    webhooks_received: int = 0
    rollout: str = "not started"
    memory: dict[str, dict[str, float]] = field(default_factory=dict)  # process → {t: MiB}
    marks: tuple[float, float] = (0.0, 0.0)  # the two memory checkpoints, minutes

    def growth(self) -> dict[str, float]:
        first, last = self.marks
        out = {}
        for name, series in self.memory.items():
            a, b = _nearest(series, first), _nearest(series, last)
            if a and b:
                out[name] = b / a - 1
        return out

    def failures(self) -> list[str]:
        why = []
        if self.errors:
            why.append(f"{sum(self.errors.values())} failed requests: {dict(self.errors)}")
        if self.dropped:
            why.append(f"{self.dropped:g} log records dropped")
        if self.lag_events_end:
            why.append(f"Monitor {self.lag_events_end:g} events behind at the end")
        grew = {k: v for k, v in self.growth().items() if v > MEMORY_GROWTH_LIMIT}
        if grew:
            why.append(f"memory grew more than {MEMORY_GROWTH_LIMIT:.0%}: {grew}")
        return why


def _nearest(series: dict[str, float], minute: float) -> float | None:
    if not series:
        return None
    key = min(series, key=lambda k: abs(float(k) - minute))
    return series[key]


def _metric(text: str, name: str) -> list[float]:
    return [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")]


def _processes(root: psutil.Process) -> dict[str, psutil.Process]:
    """The server's processes by role: arbiter, gateway workers, Monitor."""
    named: dict[str, psutil.Process] = {"arbiter": root}
    for child in root.children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "--worker-id" not in cmd or "--service-name" not in cmd:
            continue
        wid = cmd.split("--worker-id", 1)[1].split()[0]
        service = cmd.split("--service-name", 1)[1].split()[0]
        named["monitor" if service.endswith("monitor") else f"gateway-{wid}"] = child
    return named


class Soak:
    def __init__(self, url: str, proc: Any, tokens: dict[str, str], minutes: float,
                 seed: int, receiver: Any) -> None:
        self.url, self.proc, self.tokens = url, proc, tokens
        self.minutes, self.receiver = minutes, receiver
        self.report = Report(minutes=minutes)
        self.rng = np.random.default_rng(seed)
        data = load_breast_cancer()
        self.X, self.y = data.data, data.target
        self.sigma = self.X.std(axis=0)
        self.shift_feature = list(data.feature_names).index("mean texture")
        self.pending: deque[tuple[str, list[int]]] = deque(maxlen=5000)
        self.lock = threading.Lock()
        self.t0 = 0.0
        self.stop = threading.Event()

    # -------------------------------------------------------------------------- load
    def elapsed(self) -> float:
        return (time.monotonic() - self.t0) / 60

    def _count(self, kind: str, r: httpx.Response | None, expected: tuple[int, ...]) -> bool:
        with self.lock:
            self.report.requests[kind] += 1
            if r is None or r.status_code not in expected:
                self.report.errors[f"{kind} {r.status_code if r is not None else 'transport'}"
                                   ] += 1
                return False
        return True

    def predictions(self, worker: int, rate: float) -> None:
        rng = np.random.default_rng(int(self.rng.integers(1 << 31)) + worker)
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self.stop.is_set():
                started = time.monotonic()
                idx = rng.integers(0, len(self.X), int(rng.integers(1, 9)))
                rows = self.X[idx].copy()
                if 0.45 <= self.elapsed() / self.minutes < 0.55:  # the drift episode
                    rows[:, self.shift_feature] += self.sigma[self.shift_feature]
                body = {"model": MODEL, "instances": rows.tolist(),
                        "routing_key": f"user-{int(rng.integers(10_000))}"}
                try:
                    r: httpx.Response | None = c.post("/predict", json=body)
                except httpx.TransportError:
                    r = None
                if self._count("predict", r, (200,)) and r is not None:
                    answer = r.json()
                    with self.lock:
                        self.report.variants[answer["variant"]] += 1
                    if rng.random() < 0.8:  # most predictions get their labels later
                        self.pending.append((answer["request_id"], [int(v) for v in
                                                                   self.y[idx]]))
                time.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))

    def feedback(self) -> None:
        h = {"Authorization": f"Bearer {self.tokens['feedback']}"}
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self.stop.wait(0.5):
                items = []
                while self.pending and len(items) < 500:
                    rid, labels = self.pending.popleft()
                    items += [{"request_id": rid, "row": i, "label": y}
                              for i, y in enumerate(labels)]
                if not items:
                    continue
                try:
                    r: httpx.Response | None = c.post(
                        "/feedback", json={"model": MODEL, "items": items}, headers=h)
                except httpx.TransportError:
                    r = None
                if self._count("feedback", r, (202,)) and r is not None:
                    with self.lock:
                        self.report.labels_accepted += r.json()["accepted"]

    def operator(self) -> None:
        """Admin reads as a viewer every second; the rollout starts at 30% of the run."""
        viewer = {"Authorization": f"Bearer {self.tokens['viewer']}"}
        operator = {"Authorization": f"Bearer {self.tokens['operator']}"}
        reads = [f"/admin/models/{MODEL}/stats", "/admin/deployments",
                 f"/admin/drift/{MODEL}", f"/admin/rollouts/{MODEL}", "/admin/audit?limit=20",
                 "/admin/webhooks/deliveries?limit=20", "/v2/health/ready", "/metrics"]
        started = False
        with httpx.Client(base_url=self.url, timeout=30) as c:
            i = 0
            while not self.stop.wait(1.0):
                path = reads[i % len(reads)]
                i += 1
                try:
                    r: httpx.Response | None = c.get(path, headers=viewer)
                except httpx.TransportError:
                    r = None
                rollout_read = path.startswith("/admin/rollouts/")
                self._count("admin read", r, (200,) if started or not rollout_read else (404,))
                if not started and self.elapsed() >= 0.3 * self.minutes:
                    started = True
                    span = max(5.0, self.minutes * 60 * 0.08)
                    try:
                        r = c.post(f"/admin/rollouts/{MODEL}", headers=operator, json={
                            "candidate": "v2", "steps": [0.25, 0.5, 1.0], "min_seconds": span,
                            "min_requests": 50, "max_wait_seconds": span * 4})
                    except httpx.TransportError:
                        r = None
                    self._count("rollout start", r, (201,))

    def memory(self) -> None:
        root = psutil.Process(self.proc.pid)
        while True:
            t = f"{self.elapsed():.2f}"
            for name, p in _processes(root).items():
                try:
                    rss = p.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                self.report.memory.setdefault(name, {})[t] = round(rss, 1)
            if self.stop.wait(15):
                return

    def lag(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self.stop.wait(2.0):
                try:
                    text = c.get("/metrics").text
                except httpx.TransportError:
                    continue
                seconds = _metric(text, "vigil_monitor_lag_seconds")
                if seconds:
                    self.report.lag_seconds_max = max(self.report.lag_seconds_max,
                                                      max(seconds))

    # -------------------------------------------------------------------------- run
    def run(self, rate: float) -> Report:
        self.t0 = time.monotonic()
        threads = [threading.Thread(target=self.predictions, args=(i, rate / 2), daemon=True)
                   for i in range(2)]
        threads += [threading.Thread(target=f, daemon=True)
                    for f in (self.feedback, self.operator, self.memory, self.lag)]
        for t in threads:
            t.start()
        self.stop.wait(self.minutes * 60)
        self.stop.set()
        for t in threads:
            t.join(timeout=60)
        self.finish()
        return self.report

    def finish(self) -> None:
        r = self.report
        r.marks = (min(2.0, self.minutes * 0.2), self.minutes)
        viewer = {"Authorization": f"Bearer {self.tokens['viewer']}"}
        with httpx.Client(base_url=self.url, timeout=30) as c:
            deadline = time.monotonic() + 30
            while True:  # the Monitor catches up once the load stops
                text = c.get("/metrics").text
                r.lag_events_end = sum(_metric(text, "vigil_monitor_lag_events"))
                if not r.lag_events_end or time.monotonic() > deadline:
                    break
                time.sleep(1)
            r.dropped = sum(_metric(text, "vigil_prediction_log_dropped_total"))
            drift = c.get(f"/admin/drift/{MODEL}", headers=viewer).json()
            r.drift_alarms = len(drift.get("alarms", drift.get("active_alarms", [])))
            rollout = c.get(f"/admin/rollouts/{MODEL}", headers=viewer)
            if rollout.status_code == 200:
                state = rollout.json()["state"]
                r.rollout = (f"{state['status']} at step {state['step'] + 1}"
                             + (f" ({state['reason']})" if state.get("reason") else ""))
        r.webhooks_received = len(self.receiver.received)


def render(r: Report) -> str:
    first, last = r.marks
    lines = [
        f"`make soak` on {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: "
        f"{r.minutes:g} minutes of mixed load on 127.0.0.1 (2 Gateway workers + Monitor, "
        "SQLite store).", "",
        "| requests | count | failed |", "|---|---|---|"]
    for kind, n in sorted(r.requests.items()):
        failed = sum(v for k, v in r.errors.items() if k.startswith(kind))
        lines.append(f"| {kind} | {n:,} | {failed} |")
    lines += ["", f"- variants served: {dict(r.variants)}; labels accepted: "
                  f"{r.labels_accepted:,}",
              f"- log records dropped: {r.dropped:g}; Monitor lag at the end: "
              f"{r.lag_events_end:g} events (max lag during the run "
              f"{r.lag_seconds_max:.2f} s)",
              f"- drift alarms: {r.drift_alarms}; retraining webhooks received: "
              f"{r.webhooks_received}; rollout: {r.rollout}", "",
              f"| process | RSS at minute {first:g} (MiB) | RSS at minute {last:g} (MiB) | "
              "growth |", "|---|---|---|---|"]
    growth = r.growth()
    for name in sorted(r.memory):
        a, b = _nearest(r.memory[name], first), _nearest(r.memory[name], last)
        lines.append(f"| {name} | {a:.1f} | {b:.1f} | {growth.get(name, 0):+.1%} |")
    failures = r.failures()
    lines += ["", "**Result: " + ("passed**" if not failures else
                                  "failed** — " + "; ".join(failures))]
    return "\n".join(lines) + "\n"


def soak(minutes: float, rate: float = 80.0, seed: int = 11,
         data_dir: Path | None = None) -> Report:
    from tests.e2e.conftest import TOKENS, start_server, stop_server
    from tests.receivers import receiver

    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="vigil-soak-"))
    with receiver() as rx:
        extra = {
            "VIGIL_SOAK_WEBHOOK_SECRET": "whsec_c29hay1zZWNyZXQtZm9yLXRlc3Rz",
            "VIGIL_WEBHOOKS__TARGETS": (
                '[{"name": "retrain", "type": "generic", "url": "' + rx.url + '/retrain", '
                '"secret_env": "VIGIL_SOAK_WEBHOOK_SECRET"}]'),
            "VIGIL_POLICIES": '{"breast_cancer": {"drift_signals": ["input_mean", '
                              '"input_scale"], "cooldown_seconds": 3600}}'}
        proc, srv = start_server(data_dir, extra)
        try:
            return Soak(srv.url, proc, TOKENS, minutes, seed, rx).run(rate)
        finally:
            stop_server(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=80.0, help="prediction requests per second")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", type=Path, default=ROOT / "load_tests" / "soak_results.md")
    args = ap.parse_args()
    report = soak(args.minutes, args.rate, args.seed)
    text = render(report)
    print(text)
    args.out.write_text(text)
    sys.exit(1 if report.failures() else 0)


if __name__ == "__main__":
    main()
