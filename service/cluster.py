"""The cluster pieces of a process, built from the Settings (``log.backend: nats``): the
worker's NATS publisher and the stream it publishes to. docs/architecture.md, Scale-out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monitoring.log.jetstream import StreamSpec
from monitoring.log.publisher import NatsWriter
from monitoring.metrics import GatewayMetrics
from service.settings import Settings


def stream_spec(settings: Settings) -> StreamSpec:
    n = settings.log.nats
    return StreamSpec(url=n.url, name=n.stream, partitions=settings.log.partitions,
                      duplicate_window=n.duplicate_window, timeout=n.connect_timeout_seconds)


def nats_writer(settings: Settings, stream: str, render: Callable[[Any], bytes],
                metrics: GatewayMetrics | None, on_drop: Callable[[str, int], None],
                on_write: Callable[[int], None]) -> NatsWriter:
    """This worker's publisher; its spill is ``<log dir>/spill/<stream>/``."""

    def on_spill(n: int) -> None:
        if metrics is not None:
            metrics.log_spilled.inc(n)

    def on_forward(n: int) -> None:
        if metrics is not None:
            metrics.log_forwarded.inc(n)

    lg = settings.log
    return NatsWriter(stream_spec(settings), settings.log_dir / "spill", stream, render,
                      queue_size=lg.queue_size, fsync_seconds=lg.fsync_seconds,
                      on_drop=on_drop, on_write=on_write, on_spill=on_spill,
                      on_forward=on_forward)
