"""What keeps a shadow lane from hurting the process: a circuit breaker over its calls, and a
clock of the time its thread waits on the CPU's run queue."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


class CircuitBreaker:
    """Closed → open after ``failures`` consecutive failures; after ``reset_seconds`` one
    trial call is let through (half-open): success closes it, failure opens it again."""

    def __init__(self, failures: int, reset_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._clock() - self._opened_at >= self.reset_seconds else "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial:
            self._trial = True
            return True
        return False

    def record(self, ok: bool) -> None:
        self._trial = False
        if ok:
            self._consecutive = 0
            self._opened_at = None
            return
        self._consecutive += 1
        if self._opened_at is not None or self._consecutive >= self.failures:
            self._opened_at = self._clock()


class RunQueueClock:
    """Seconds a thread has spent runnable but kept off the CPU by the scheduler (waiting on
    a run queue), from Linux's ``/proc/self/task/<tid>/schedstat`` (its second field, in
    ns); always 0 where there is no such file. Read from any thread, about 1 µs a read."""

    def __init__(self, native_id: int | None) -> None:
        self._fd: int | None = None
        try:
            self._fd = os.open(f"/proc/self/task/{native_id}/schedstat", os.O_RDONLY)
        except (OSError, TypeError):
            pass

    def __call__(self) -> float:
        if self._fd is None:
            return 0.0
        try:
            return int(os.pread(self._fd, 128, 0).split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            return 0.0

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
