"""Process-wide tuning of the Monitor and the workers (service.process)."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from service.process import LagBoundedYield, collections_paused


def test_a_tick_runs_with_collections_paused_and_they_resume_after() -> None:
    assert gc.isenabled()
    seen = collections_paused(lambda: gc.isenabled())
    assert seen is False and gc.isenabled()


def test_collections_resume_when_the_tick_fails() -> None:
    def failing() -> None:
        raise RuntimeError("tick failed")

    with pytest.raises(RuntimeError):
        collections_paused(failing)
    assert gc.isenabled()


def test_a_process_that_turned_collections_off_keeps_them_off() -> None:
    gc.disable()
    try:
        assert collections_paused(lambda: 42) == 42
        assert not gc.isenabled()
    finally:
        gc.enable()


class FakeGroup:
    """Stands in for the kernel's session group: records each nice asked for; refuses while
    ``refuse`` (the kernel's EAGAIN)."""

    def __init__(self) -> None:
        self.asked: list[int] = []
        self.refuse = False

    def __call__(self, nice: int) -> int | None:
        self.asked.append(nice)
        return None if self.refuse else nice


def test_the_monitor_stops_yielding_while_behind_and_yields_again_once_caught_up() -> None:
    group = FakeGroup()
    y = LagBoundedYield(10, max_lag=1.0, set_nice=group)
    assert [y.after_tick(lag) for lag in (0.2, 0.45)] == [10, 10] and group.asked == []
    assert y.after_tick(0.6) == 0  # over half the bound: the workers' priority
    assert y.after_tick(0.4) == 0  # not yet within a quarter: still
    assert y.after_tick(0.2) == 10  # caught up: yielding again
    assert group.asked == [0, 10]
    group.refuse = True  # another process changed a group in the last 100 ms
    assert y.after_tick(0.9) == 10
    group.refuse = False
    assert y.after_tick(0.9) == 0  # tried again at the next tick
    assert group.asked == [0, 10, 0, 0]


@pytest.mark.parametrize(("nice", "max_lag"), [(0, 1.0), (10, 0.0)])
def test_a_monitor_at_the_workers_priority_or_without_a_bound_keeps_its_nice(
        nice: int, max_lag: float) -> None:
    group = FakeGroup()
    y = LagBoundedYield(nice, max_lag=max_lag, set_nice=group)
    assert [y.after_tick(lag) for lag in (5.0, 0.0)] == [nice, nice] and group.asked == []


CHILD = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from service.process import lower_priority, set_group_nice
os.setsid()  # a session, and so a group, of its own, as circus gives the Monitor
print(lower_priority(10), end=" ")
time.sleep(0.15)  # one unprivileged change per 100 ms
print(set_group_nice(0), end=" ")
time.sleep(0.15)
print(set_group_nice(10), os.getuid())
"""


@pytest.mark.skipif(not (Path("/proc/self/autogroup").exists() and shutil.which("setpriv")
                         and os.geteuid() == 0 and Path("/usr/bin/python3").exists()),
                    reason="needs the kernel's session groups (CONFIG_SCHED_AUTOGROUP), and "
                    "root with setpriv to run the check as an unprivileged user")
def test_an_unprivileged_monitor_can_raise_its_group_back_to_the_workers_priority() -> None:
    """What LagBoundedYield relies on, on this kernel, as a user without privilege: a
    process that lowered its session group's priority to nice 10 raises it back to 0 and
    lowers it again (a process's own nice could not go back down)."""
    out = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534",
                          "--clear-groups", "/usr/bin/python3", "-c", CHILD,
                          str(Path(__file__).resolve().parent.parent)],
                         capture_output=True, text=True, timeout=60)
    if "Permission denied" in out.stderr:
        pytest.skip(f"the checkout is not readable by an unprivileged user: {out.stderr[-200:]}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["10", "0", "10", "65534"]
