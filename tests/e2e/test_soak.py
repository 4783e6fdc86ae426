"""The short version of `make soak` (30 s instead of 10 minutes): the same mixed load —
predictions, labels, admin reads, a drift episode and a rollout — against a real server,
answered without one failure, with no log record dropped and the Monitor caught up. (Memory
flatness needs the long run: `make soak` checks minute 2 against minute 10.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from load_tests.soak import render, soak

pytestmark = pytest.mark.e2e


def test_a_short_soak_fails_nothing_drops_nothing_and_catches_up(tmp_path: Path) -> None:
    report = soak(minutes=0.5, rate=60, seed=3, data_dir=tmp_path)
    text = render(report)
    assert not report.errors, text
    assert report.dropped == 0 and report.lag_events_end == 0, text
    assert report.requests["predict"] > 500 and report.requests["feedback"] > 10, text
    assert report.requests["admin read"] > 10 and report.requests["rollout start"] == 1, text
    assert report.labels_accepted > 0 and set(report.variants) == {"champion", "canary"}, text
    assert {"arbiter", "gateway-1", "gateway-2", "monitor"} <= set(report.memory), text
    assert report.rollout != "not started", text
