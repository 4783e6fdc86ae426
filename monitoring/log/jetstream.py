"""The NATS JetStream side shared by the log's publisher and its reader: one asyncio loop in a
thread of its own (the worker's writer and the Monitor's loop are threads, nats-py is
asyncio), a connection, and the stream (created when missing, with every partition's subject
and the duplicate window)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

T = TypeVar("T")
log = logging.getLogger("vigil.log")

MSG_ID = "Nats-Msg-Id"


@dataclass(frozen=True)
class StreamSpec:
    """The stream the log lives on: its name, the servers, the partitions and the window in
    which a re-published event id is dropped by the server."""

    url: str
    name: str = "VIGIL"
    partitions: int = 8
    duplicate_window: float = 600.0
    timeout: float = 2.0
    replicas: int = 1
    max_age: float = 72 * 3600.0  # seconds a record is kept (consumed or not)


class LoopThread:
    """An asyncio loop in a daemon thread; ``run`` waits for a coroutine from any thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


async def _quiet(exc: Exception) -> None:
    """nats-py logs every failed reconnection at ERROR by default; the callers log the
    outage once and count what it costs."""
    log.debug("nats: %s", exc)


async def connect(spec: StreamSpec, *, reconnect: bool = True) -> Client:
    """A connection that keeps reconnecting in the background once it was made. The first
    connection is given ``spec.timeout`` per server (nats-py would otherwise retry it
    forever): raises (``OSError``, ``nats.errors.NoServersError``, TimeoutError) when no
    server answers, and the caller tries again later."""
    servers = [u.strip() for u in spec.url.split(",") if u.strip()]
    return await asyncio.wait_for(nats.connect(
        servers=servers, connect_timeout=spec.timeout, allow_reconnect=reconnect,
        max_reconnect_attempts=-1, reconnect_time_wait=0.5, ping_interval=5,
        max_outstanding_pings=2, error_cb=_quiet), spec.timeout * len(servers) + 1.0)


async def ensure_stream(js: JetStreamContext, spec: StreamSpec) -> None:
    """The stream with every partition's subject, created when missing (an existing stream
    is left as its operator configured it)."""
    try:
        await js.stream_info(spec.name)
    except NotFoundError:
        await js.add_stream(StreamConfig(
            name=spec.name, subjects=[f"{spec.name}.events.*"],
            duplicate_window=spec.duplicate_window, num_replicas=spec.replicas,
            max_age=spec.max_age))
