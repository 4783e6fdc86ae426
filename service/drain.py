"""Graceful drain on SIGTERM, in the order a load balancer needs.

uvicorn stops accepting connections as soon as SIGTERM arrives, so a balancer that still
routes here would see refused connections. Each worker instead:

1. marks itself draining: ``/readyz`` and ``/v2/health/ready`` answer 503 (``/livez`` stays
   200) while it keeps serving every request for ``server.drain_seconds``;
2. hands SIGTERM on to uvicorn, which closes the listening socket and lets the requests in
   flight finish;
3. runs its shutdown hook: the log queue is drained, flushed, fsynced and the segment renamed.

The Monitor waits ``drain_seconds + 1`` before it stops, so its last tick reads the workers'
last records and commits their checkpoint. SIGINT (Ctrl-C) stops at once, as before. A second
SIGTERM during the drain changes nothing (a process-group kill and circus both send one); the
drain is bounded by ``drain_seconds`` (at most 300 s).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger("vigil.drain")
# the server process that started this one, read at import (early in the worker's life): read
# later, it could already be init's pid if the server died while the worker started up
PARENT = os.getppid()


def delay_sigterm(seconds: float, on_term: Callable[[], None]) -> None:
    """From a startup hook on the worker's event loop (uvicorn has installed its handlers):
    on SIGTERM call ``on_term`` now and pass the signal on to uvicorn after ``seconds``."""
    if seconds <= 0:
        return
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return
    forward: Callable[[int, FrameType | None], Any] = previous
    fired = False

    def handler(sig: int, frame: FrameType | None) -> None:
        nonlocal fired
        if fired:  # killpg and then circus both send one: the drain is bounded anyway
            log.info("SIGTERM again while draining; still stopping on schedule")
            return
        fired = True
        log.info("SIGTERM: not ready; serving %.1f s more before stopping", seconds)
        on_term()
        loop.call_soon_threadsafe(loop.call_later, seconds, forward, sig, None)

    signal.signal(signal.SIGTERM, handler)


async def exit_with_parent(interval: float = 1.0, grace: float = 15.0) -> None:
    """Stop this worker when the server process (circus's arbiter) is gone.

    circus starts every worker in a session of its own, so a SIGKILL of the arbiter alone
    (the OOM killer's usual pick: it is the largest) would leave the workers serving the old
    socket and the Monitor ticking beside the next server's. Checked every ``interval``: on a
    new parent, SIGINT to ourselves — uvicorn's immediate, graceful stop (requests in flight
    finish, shutdown hooks flush the log and run the Monitor's last tick). An orphan that has
    not stopped ``grace`` seconds later exits at once: nothing may outlive its server."""
    parent = PARENT
    while os.getppid() == parent:
        await asyncio.sleep(interval)
    log.error("the server process %d is gone; this worker stops", parent)
    hard = threading.Timer(grace, os._exit, args=(1,))
    hard.daemon = True
    hard.start()
    signal.raise_signal(signal.SIGINT)
