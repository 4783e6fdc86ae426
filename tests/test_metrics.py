"""Multiprocess metrics: a killed process's live gauges do not linger; its counts stay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

WRITER = """
import os, signal
from monitoring.metrics import GatewayMetrics
m = GatewayMetrics()
m.log_queue.set(42)
m.requests.labels("m", "v1", "champion", "ok").inc(7)
os.kill(os.getpid(), signal.SIGKILL)  # no exit hook runs, as under kill -9
"""
READER = "from monitoring.metrics import exposition; print(exposition().decode())"


def run(code: str, directory: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])


def test_a_killed_worker_leaves_its_counts_but_not_its_gauges(tmp_path: Path) -> None:
    writer = run(WRITER, tmp_path)
    assert writer.returncode == -signal.SIGKILL
    assert any(p.name.startswith("gauge_livesum_") for p in tmp_path.iterdir())
    # the reader notices the writer is gone and drops its live gauges before collecting
    text = run(READER, tmp_path).stdout
    assert 'vigil_requests_total{model="m",outcome="ok",variant="champion",version="v1"} 7.0' \
        in text
    assert "vigil_prediction_log_queue_depth 42" not in text
    assert not any(p.name.startswith("gauge_livesum_") for p in tmp_path.iterdir())
