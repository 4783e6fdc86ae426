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
