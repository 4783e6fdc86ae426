"""Process-wide tuning shared by the Gateway workers and the Monitor."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def tune_gc() -> None:
    """Models, sessions and modules loaded at start live for the whole process: move them to
    the permanent generation (``gc.freeze``) so a full collection does not walk them, and
    let the young generation grow before collecting (requests and log records allocate a
    lot, briefly)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def collections_paused(fn: Callable[[], T]) -> T:
    """Run ``fn`` with the cyclic collector's automatic runs held off, then let them run.

    For the Monitor's tick: a step holds a batch of parsed records (dicts, ~50 objects a
    record) while it works, and a young-generation collection in the middle walked them and
    promoted the survivors. Held off, they are freed by reference counting when the step
    ends (JSON has no cycles) and the next collection finds little: young collections took
    1.5 µs of tick-thread CPU a record, 0.4 µs held off (1,200 req/s, thread_time around
    each collection). Nothing is skipped: collections due meanwhile run at the next
    allocation after."""
    if not gc.isenabled():  # tuning off, or already paused by a caller
        return fn()
    gc.disable()
    try:
        return fn()
    finally:
        gc.enable()


AUTOGROUP = Path("/proc/self/autogroup")


def lower_priority(increment: int, autogroup: Path = AUTOGROUP) -> int | None:
    """Run this process ``increment`` nice levels below the request path, for real.

    ``os.nice`` alone does nothing against processes of other sessions where the kernel
    groups tasks by session (``CONFIG_SCHED_AUTOGROUP``, on by default in most distributions):
    the CPU is shared between the groups first, each at its group's own nice, and circus
    starts every worker in a session of its own. So the session's group gets the same nice
    (``/proc/self/autogroup``, see sched(7)); the Monitor is alone in its session. Returns
    the group's nice, or None where there is no autogroup."""
    os.nice(increment)
    try:
        current = int(autogroup.read_text().rsplit("nice", 1)[1])
        autogroup.write_text(str(min(19, current + increment)))
        return int(autogroup.read_text().rsplit("nice", 1)[1])
    except (OSError, ValueError, IndexError):  # no autogroup (or not allowed): nice alone
        return None


def set_group_nice(nice: int, autogroup: Path = AUTOGROUP) -> int | None:
    """Set this session's scheduling group's nice (0 to 19); returns it as read back, or None
    where there is no group or the change was refused. Unlike a process's own nice, which
    only a privileged process may lower again, a group's nice may go down as well as up
    without privilege (sched(7): only a negative value needs ``CAP_SYS_NICE``). The kernel
    takes one change per 100 ms machine-wide from unprivileged processes (EAGAIN): the
    caller tries again later."""
    try:
        autogroup.write_text(str(nice))
        return int(autogroup.read_text().rsplit("nice", 1)[1])
    except (OSError, ValueError, IndexError):
        return None


class LagBoundedYield:
    """The Monitor yields the cores to the Gateway workers while it keeps up, and stops
    yielding while it is behind.

    At ``monitor.nice`` 10 a Monitor starved by busy workers fell seconds behind: at 75% of
    the peak /predict rate its tick took 1-2.3 s of wall time for 0.1-0.3 s of CPU, the
    rest waiting for a CPU (``/proc/thread-self/schedstat``), and ``make bench`` saw a lag
    of 1.95 s. Drift alarms, quality and canary decisions are as late as the Monitor. So
    once a tick ends more than half ``max_lag`` behind, its session group goes to the
    workers' nice (0) until a tick ends within a quarter of it, then back to ``nice``.

    Where there is no session group (``/proc/self/autogroup``), or the kernel leaves the
    process out of it (a cgroup of its own: containers, systemd services), only the
    process's own nice applies, lowered once at start."""

    def __init__(self, nice: int, max_lag: float,
                 set_nice: Callable[[int], int | None] = set_group_nice) -> None:
        self.nice, self.max_lag = nice, max_lag
        self._set = set_nice
        self.current = nice  # the group's nice as last set

    def after_tick(self, lag_seconds: float) -> int:
        """Given the lag a tick ended with, the group's nice for the next (set if changed)."""
        if not self.nice or not self.max_lag:
            return self.current
        want = (0 if lag_seconds > self.max_lag / 2 else
                self.nice if lag_seconds < self.max_lag / 4 else self.current)
        if want != self.current and self._set(want) == want:
            self.current = want
        return self.current
