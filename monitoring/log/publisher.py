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
a record: NATS is not connected, or connected but its last publish was not acknowledged (a
stream without a leader or gone; until a publish or the stream's info answers again), and
the spill cannot be written (probed once a second while NATS does not take records, so a
broken or full spill is known before a label is accepted onto it) or its queue is full. A
spill that cannot be written while NATS is connected again is bypassed: new batches go to
the stream ahead of the spill's remainder rather than be dropped.

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
from nats.js.client import JetStreamContext

from monitoring.log.frames import LogKeys
from monitoring.log.jetstream import LoopThread, StreamSpec, connect, ensure_stream
from monitoring.log.partitions import partition_of, route_of, subject
from monitoring.log.payloads import PayloadSealer
from monitoring.log.queue import RecordQueue
from monitoring.log.reader import Checkpoint, LocalEventLog, pid_alive
from monitoring.log.writer import SegmentWriter

log = logging.getLogger("vigil.log")

FORWARD_BATCH = 1000
# records published before their acknowledgements are awaited: below nats-py's limit of
# pending acknowledgements (4,000 a JetStream context), so a publish never waits for a place
PUBLISH_CHUNK = 1000


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
        self._acking = True  # the last publish was acknowledged (or none failed yet)
        self._acking_checked_at = 0.0
        self._forwarded: dict[Path, Checkpoint] = {}
        self._spill_pending = False
        self._nc: Client | None = None
        # one JetStream context a connection: each context subscribes to an inbox of its own
        # for the acknowledgements (a context made per batch left one subscription a batch)
        self._js: JetStreamContext | None = None
        self._subjects: dict[str, str] = {}
        self._next_connect = 0.0
        self._warned = False
        self._wake = threading.Event()
        self.records_written = self.spilled = self.forwarded = 0
        self._loop = LoopThread(f"nats-{stream}")
        self._done = asyncio.run_coroutine_threadsafe(self._run(), self._loop.loop)

    # --- caller side: RecordQueue's (submit never blocks)
    @property
    def failing(self) -> bool:
        """Neither path takes records: NATS is not connected or does not acknowledge, and
        the spill cannot be written (probed every second meanwhile) or its queue is full.
        While NATS acknowledges it takes what the spill cannot."""
        return not self._taking and (self._spill.failing or self._spill.room() == 0)

    @property
    def _taking(self) -> bool:
        """NATS takes records: connected, and the last publish was acknowledged."""
        return self.connected and self._acking

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
                    await self._check_acking()
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
            self._nc, self._js = nc, nc.jetstream()
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
        if not self._taking and now - self._probed_at >= 1.0:
            self._probed_at = now
            self._spill.probe()

    async def _ship(self, lines: list[bytes]) -> None:
        if not lines:
            return
        if not self.connected or (self._spill_pending and not self._spill.failing):
            self._to_spill(lines)  # behind a pending spill: the stream keeps their order
            return
        failed = await self._publish(lines)
        self._acking = not failed
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
        """Publish pipelined, ``PUBLISH_CHUNK`` records at a time; the lines not acknowledged
        within the timeout, in order. After a chunk not wholly acknowledged the rest is not
        tried (it spills after the failed ones, in order)."""
        failed: list[bytes] = []
        for at in range(0, len(lines), PUBLISH_CHUNK):
            chunk = lines[at:at + PUBLISH_CHUNK]
            if failed:
                failed += [line for line in chunk if self._record_or_drop(line)]
            else:
                failed = await self._publish_chunk(chunk)
        return failed

    async def _publish_chunk(self, lines: list[bytes]) -> list[bytes]:
        assert self._js is not None
        js, spec = self._js, self.spec
        futures: list[asyncio.Future[Any] | None] = []
        for line in lines:
            try:
                event_id, model = route_of(line)
                # no stall timeout: a chunk is below the client's limit of pending
                # acknowledgements, so acquiring a place never waits, and a timeout would
                # cost an asyncio task and a turn of the loop a record (asyncio.wait_for)
                futures.append(await js.publish_async(
                    self._subject(model), self._sealer.seal(line), wait_stall=None,
                    headers=self._sealer.headers(event_id)))
            except ValueError:
                self._drop("render_error", 1)
                futures.append(None)
            except Exception:
                futures.append(None)
        waiting = [f for f in futures if f is not None]
        if waiting:
            await asyncio.wait(waiting, timeout=spec.timeout)
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

    def _subject(self, model: str) -> str:
        """The subject of a model's partition (a hash: computed once per model)."""
        name = self._subjects.get(model)
        if name is None:
            name = subject(self.spec.name, partition_of(model, self.spec.partitions))
            self._subjects[model] = name
        return name

    def _record_or_drop(self, line: bytes) -> bool:
        if _is_record(line):
            return True
        self._drop("render_error", 1)
        return False

    async def _forward(self) -> None:
        """Forward spilled records, oldest directory first, then delete what was sent."""
        if not self._spill_pending and not self._orphans():
            return
        for directory in [*self._claimed(), self._spill_dir]:
            while True:
                reader = LocalEventLog(directory, keys=self.keys)
                checkpoint = self._forwarded.get(directory, {})
                try:
                    batch = reader.read(checkpoint, FORWARD_BATCH)
                except OSError:  # an unreadable spill: its probe and drops say so
                    break
                if not batch.lines:
                    break
                failed = await self._publish(batch.lines)
                self._acking = not failed
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

    async def _check_acking(self) -> None:
        """While publishes are not acknowledged and nothing is sent (``failing`` refuses
        labels), whether the stream answers again: its info, once a second."""
        now = time.monotonic()
        if self._acking or self._nc is None or now - self._acking_checked_at < 1.0:
            return
        self._acking_checked_at = now
        try:
            await self._nc.jetstream(timeout=self.spec.timeout).stream_info(self.spec.name)
        except Exception:
            return
        self._acking = True

    def _orphans(self) -> list[Path]:
        """Spill directories of writers that died before forwarding them."""
        try:
            entries = list(os.scandir(self.spill_root))
        except OSError:  # none yet, or not a directory (the spill's probe says so)
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
