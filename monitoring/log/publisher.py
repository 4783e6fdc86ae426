"""Publishing the prediction log to NATS JetStream (``log.backend: nats``), with the local
segments as a spill.

``NatsWriter`` stands where a ``SegmentWriter`` stands behind a ``LogSink``: the same bounded
queue that never blocks the caller, the same ``submit``/``room``/``failing``. Its thread takes
the whole queue every ``flush_seconds``, renders it, and publishes the batch pipelined (one
acknowledgement future per record, awaited together: no round trip per record), each record
on ``<stream>.events.<partition of its model>`` with ``Nats-Msg-Id`` = its event id, so a
re-published record is dropped by the server within the stream's duplicate window.

When NATS is unreachable, or a record is not acknowledged within the timeout, the records
spill to local segments under ``<log dir>/spill/<stream>/`` (a ``SegmentWriter``: flushed
every batch, fsynced on its interval). While a spill is pending every new batch spills too,
so a worker's records reach the stream in the order they were taken; the spill is forwarded,
oldest first, once NATS answers again, then deleted. A dead worker's spill directory is
claimed (renamed, so one claimer wins) and forwarded by a live one. Spilled, forwarded and
dropped records are counted (``on_spill``, ``on_forward``, ``on_drop``).

``failing`` (``/feedback`` answers 503 with ``Retry-After``) only when neither path can take
a record: NATS is not connected and the spill cannot be written (probed once a second while
NATS is away, so a broken or full spill is known before a label is accepted onto it) or its
queue is full. A spill that cannot be written while NATS is connected again is bypassed: new
batches go to the stream ahead of the spill's remainder rather than be dropped.

With ``keys`` (``log.encryption``) every payload is one sealed frame marked ``Vigil-Encoding:
VGE1`` (``monitoring.log.payloads``); the spill is sealed on disk by its ``SegmentWriter``, and
forwarding opens it in memory only to route each record and seals it again for the wire.

A record acknowledged twice (its first acknowledgement lost, then spilled and forwarded after
the duplicate window) reaches the stream twice; the Monitor ignores an event id it has
counted already.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from monitoring.log.frames import LogKeys
from monitoring.log.jetstream import LoopThread, StreamSpec, connect, ensure_stream
from monitoring.log.partitions import partition_of, route_of, subject
from monitoring.log.payloads import PayloadSealer
from monitoring.log.queue import RecordQueue
from monitoring.log.reader import Checkpoint, LocalEventLog, pid_alive
from monitoring.log.writer import SegmentWriter

log = logging.getLogger("vigil.log")

FORWARD_BATCH = 1000


def _nop(n: int) -> None:
    return None


class NatsWriter(RecordQueue):
    """A bounded queue in front of one thread that publishes to JetStream and spills to the
    local segments (the module's docstring)."""

    def __init__(self, spec: StreamSpec, spill_dir: Path, stream: str,
                 render: Callable[[Any], bytes], *, queue_size: int = 10_000,
                 flush_seconds: float = 0.05, fsync_seconds: float = 0.5,
                 spill_max_bytes: int = 2 * 1024**3,
                 on_drop: Callable[[str, int], None] = lambda reason, n: None,
                 on_write: Callable[[int], None] = _nop,
                 on_spill: Callable[[int], None] = _nop,
                 on_forward: Callable[[int], None] = _nop,
                 keys: LogKeys | None = None) -> None:
        self.spec = spec
        self.keys = keys
        self._sealer = PayloadSealer(keys)  # used on the publishing thread only
        self.stream = stream
        self._render = render
        super().__init__(queue_size, on_drop)
        self._flush_seconds = flush_seconds
        self._on_write = on_write
        self._on_spill, self._on_forward = on_spill, on_forward
        self.spill_root = Path(spill_dir)
        self._spill_dir = self.spill_root / stream
        self._spill = SegmentWriter(self._spill_dir, stream, bytes, queue_size=queue_size * 4,
                                    fsync_seconds=fsync_seconds, flush_seconds=0.01,
                                    max_total_bytes=spill_max_bytes, on_drop=self._drop,
                                    keys=keys)
        self._probed_at = 0.0
        self._forwarded: dict[Path, Checkpoint] = {}
        self._spill_pending = False
        self._nc: Client | None = None
        self._next_connect = 0.0
        self._warned = False
        self._wake = threading.Event()
        self.records_written = self.spilled = self.forwarded = 0
        self._loop = LoopThread(f"nats-{stream}")
        self._done = asyncio.run_coroutine_threadsafe(self._run(), self._loop.loop)

    # --- caller side: RecordQueue's (submit never blocks)
    @property
    def failing(self) -> bool:
        """Neither path takes records: NATS is not connected and the spill cannot be
        written (probed every second while NATS is away) or its queue is full. While NATS is
        connected it takes what the spill cannot."""
        return not self.connected and (self._spill.failing or self._spill.room() == 0)

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def spill_pending(self) -> bool:
        return self._spill_pending

    def close(self, timeout: float = 10.0) -> None:
        """Publish (or spill) what is queued, close the spill and the connection."""
        self._stop = True
        self._wake.set()
        try:
            self._done.result(timeout)
        except Exception:
            log.exception("the NATS publisher did not stop cleanly")
        self._spill.close()
        self._loop.stop()
        if not self._spill_pending:  # all forwarded: the last segment closed empty of news
            shutil.rmtree(self._spill_dir, ignore_errors=True)

    # --- the publishing thread

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            stopping = self._stop
            batch = []
            while self._queue:
                self._in_hand += 1
                batch.append(self._queue.popleft())
            try:
                self._probe_spill()
                await self._connect()
                if batch:
                    await self._ship(self._lines(batch))
                if self.connected:
                    await self._forward()
            except Exception:  # the thread must outlive any one batch
                log.exception("the NATS publisher failed on a batch")
            finally:
                self._in_hand = 0
            if stopping:
                if self._nc is not None:
                    await self._nc.close()
                return

    def _lines(self, batch: list[Any]) -> list[bytes]:
        lines = []
        for item in batch:
            try:
                lines.append(self._render(item).rstrip(b"\n"))
            except Exception:
                log.exception("could not render a log record")
                self._drop("render_error", 1)
        return lines

    async def _connect(self) -> None:
        if self._nc is not None or time.monotonic() < self._next_connect:
            return
        try:
            nc = await connect(self.spec)
            await ensure_stream(nc.jetstream(), self.spec)
            self._nc = nc
            self._warned = False
            log.info("prediction log publishing to NATS stream %s", self.spec.name)
        except Exception as exc:
            self._next_connect = time.monotonic() + 1.0
            if not self._warned:  # once an outage: the spill counter says the rest
                self._warned = True
                log.warning("NATS at %s unreachable (%r); records spill to %s",
                            self.spec.url, exc, self._spill_dir)

    def _probe_spill(self) -> None:
        """While NATS is away, whether the spill can take records, known before any is lost
        on it (``failing``); once a second."""
        now = time.monotonic()
        if not self.connected and now - self._probed_at >= 1.0:
            self._probed_at = now
            self._spill.probe()

    async def _ship(self, lines: list[bytes]) -> None:
        if not lines:
            return
        if not self.connected or (self._spill_pending and not self._spill.failing):
            self._to_spill(lines)  # behind a pending spill: the stream keeps their order
            return
        failed = await self._publish(lines)
        acked = len(lines) - len(failed)
        self.records_written += acked
        self._on_write(acked)
        if failed:
            self._to_spill(failed)

    def _to_spill(self, lines: list[bytes]) -> None:
        taken = 0
        for line in lines:
            taken += self._spill.submit(line + b"\n")
        self._spill_pending = True
        self.spilled += taken
        self._on_spill(taken)

    async def _publish(self, lines: list[bytes]) -> list[bytes]:
        """Publish pipelined; the lines not acknowledged within the timeout, in order."""
        assert self._nc is not None
        js = self._nc.jetstream()
        futures: list[asyncio.Future[Any] | None] = []
        for line in lines:
            try:
                event_id, model = route_of(line)
                futures.append(await js.publish_async(
                    subject(self.spec.name, partition_of(model, self.spec.partitions)),
                    self._sealer.seal(line), wait_stall=self.spec.timeout,
                    headers=self._sealer.headers(event_id)))
            except ValueError:
                self._drop("render_error", 1)
                futures.append(None)
            except Exception:
                futures.append(None)
        waiting = [f for f in futures if f is not None]
        if waiting:
            await asyncio.wait(waiting, timeout=self.spec.timeout)
        failed = []
        for line, f in zip(lines, futures, strict=True):
            if f is None:
                if _is_record(line):
                    failed.append(line)
            elif not f.done() or f.cancelled() or f.exception() is not None:
                if not f.done():
                    f.cancel()
                failed.append(line)
        return failed

    async def _forward(self) -> None:
        """Forward spilled records, oldest directory first, then delete what was sent."""
        if not self._spill_pending and not self._orphans():
            return
        for directory in [*self._claimed(), self._spill_dir]:
            while True:
                reader = LocalEventLog(directory, keys=self.keys)
                checkpoint = self._forwarded.get(directory, {})
                batch = reader.read(checkpoint, FORWARD_BATCH)
                if not batch.lines:
                    break
                failed = await self._publish(batch.lines)
                if failed:  # NATS went away again: the whole batch is sent again later
                    return
                self.forwarded += len(batch.lines)
                self.records_written += len(batch.lines)
                self._on_forward(len(batch.lines))
                self._on_write(len(batch.lines))
                self._forwarded[directory] = batch.checkpoint
                reader.delete_consumed(batch.checkpoint, older_than=time.time() + 1,
                                       max_total_bytes=0)
            if directory != self._spill_dir:
                shutil.rmtree(directory, ignore_errors=True)
                self._forwarded.pop(directory, None)
        if self._spill.unwritten == 0 and not LocalEventLog(self._spill_dir).backlog(
                self._forwarded.get(self._spill_dir, {})).events:
            self._spill_pending = False

    def _orphans(self) -> list[Path]:
        """Spill directories of writers that died before forwarding them."""
        try:
            entries = list(os.scandir(self.spill_root))
        except FileNotFoundError:
            return []
        out = []
        for e in entries:
            pid = _pid(e.name.split("+", 1)[0])
            if e.is_dir() and e.name != self.stream and pid > 0 and not pid_alive(pid):
                out.append(Path(e.path))
        return out

    def _claimed(self) -> list[Path]:
        """Claim the orphans (a rename: one live writer wins each) and list what is ours."""
        for path in self._orphans():
            try:
                os.rename(path, self.spill_root / f"{self.stream}+{path.name}")
            except OSError:
                continue  # another writer claimed it first
        return sorted(p for p in self.spill_root.glob(f"{self.stream}+*") if p.is_dir())


def _pid(stream: str) -> int:
    try:
        return int(stream.split("-")[-2])
    except (IndexError, ValueError):
        return -1


def _is_record(line: bytes) -> bool:
    try:
        route_of(line)
    except ValueError:
        return False
    return True
