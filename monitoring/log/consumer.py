"""Reading the prediction log from NATS JetStream (``log.backend: nats``): the Monitor's
``EventLog`` over the partitions it holds a lease on.

A partition's checkpoint is the last stream sequence the Monitor consumed on the partition's
subject (``Position(seq, 0)`` under the subject's name: the Monitor's checkpoint table
unchanged). Sequences are global to the stream, so they are sparse within a partition. Each
partition is read by an ephemeral pull consumer with ``filter_subject`` and
``opt_start_seq`` = checkpoint + 1 that acknowledges nothing: the checkpoint the Monitor
commits is the only position, and a consumer whose position no longer matches it (a step
rolled back, a partition taken over) is replaced.

``commit`` is the log's part of the Monitor's transaction: it fences the partitions' leases
(``store.cluster.LeaseStore.fence``) and records the event ids the step counted; ``read``
drops an event id already counted (a record forwarded from a spill after the stream's
duplicate window) and counts it in ``duplicates``.

Sealed payloads (``log.encryption``) are opened by ``monitoring.log.payloads``: one that fails
authentication is counted in ``bad_frames`` and skipped (the checkpoint moves past it); one
sealed by a key that is not configured stops the read with ``LogKeyError`` before the
checkpoint moves, so nothing is skipped that the right keys would read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from monitoring.log.frames import LogKeys
from monitoring.log.jetstream import LoopThread, StreamSpec, connect, ensure_stream
from monitoring.log.partitions import route_of, subject
from monitoring.log.payloads import PayloadOpener, is_sealed, one_frame
from monitoring.log.reader import Backlog, Batch, Checkpoint, Position
from monitoring.log.writer import parse_time
from store import EventIds, Lease, LeaseStore, Transaction

log = logging.getLogger("vigil.log")


class NatsEventLog:
    """``EventLog`` over the JetStream partitions named by ``leases()`` (the partitions this
    Monitor holds, by number)."""

    def __init__(self, spec: StreamSpec, event_ids: EventIds,
                 leases: Callable[[], dict[int, Lease]], *, keys: LogKeys | None = None,
                 on_bad_frame: Callable[[int], None] | None = None) -> None:
        self.spec = spec
        self.payloads = PayloadOpener(keys, spec.name, on_bad_frame)
        self.event_ids = event_ids
        self.leases = leases
        self.duplicates = 0
        self.lag: dict[int, tuple[int, float | None]] = {}  # partition: events, oldest time
        self._runner = LoopThread(f"nats-reader-{spec.name}")
        self._nc: Client | None = None
        self._subs: dict[int, tuple[JetStreamContext.PullSubscription, int]] = {}

    # --- the EventLog interface
    def read(self, checkpoint: Checkpoint, max_events: int) -> Batch:
        return self._run(self._read(checkpoint, max_events))

    def backlog(self, checkpoint: Checkpoint) -> Backlog:
        return self._run(self._backlog(checkpoint))

    def _run(self, coro: Any) -> Any:
        """On any failure (NATS away, a consumer lost with a restarted server) the
        consumers are made again from the checkpoint on the next call."""
        try:
            return self._runner.run(coro, timeout=self.spec.timeout * 4 + 30)
        except BaseException:
            self._runner.run(self._forget(), timeout=self.spec.timeout + 5)
            raise

    def commit(self, tx: Transaction, batch: Batch, now: float) -> None:
        """In the step's transaction: every lease still ours, and the ids it counted."""
        LeaseStore.fence(tx, self.leases().values(), now)
        EventIds.add(tx, batch.ids, now)

    def streams(self) -> set[str]:
        return {subject(self.spec.name, p) for p in range(self.spec.partitions)}

    def delete_consumed(self, checkpoint: Checkpoint, *, older_than: float,
                        max_total_bytes: int) -> list[Path]:
        return []  # the stream's own limits keep it (max age, max bytes)

    def append(self, lines: Iterable[bytes]) -> None:
        raise NotImplementedError("the NATS log is written by monitoring.log.publisher")

    def close(self) -> None:
        try:
            self._runner.run(self._close(), timeout=10)
        finally:
            self._runner.stop()

    # --- on the loop thread
    async def _js(self) -> JetStreamContext:
        if self._nc is None or self._nc.is_closed:
            self._nc = await connect(self.spec)
            self._subs.clear()
            await ensure_stream(self._nc.jetstream(timeout=self.spec.timeout), self.spec)
        if not self._nc.is_connected:
            raise ConnectionError(f"NATS at {self.spec.url} is not connected")
        return self._nc.jetstream(timeout=self.spec.timeout)

    async def _consumer(self, partition: int, start: int) -> JetStreamContext.PullSubscription:
        """The partition's consumer, positioned at ``start``; replaced when it is not."""
        held = self._subs.get(partition)
        if held is not None and held[1] == start:
            return held[0]
        if held is not None:
            await _unsubscribe(held[0])
        js = await self._js()
        sub = await js.pull_subscribe(
            subject(self.spec.name, partition), stream=self.spec.name,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                  opt_start_seq=start, ack_policy=AckPolicy.NONE,
                                  inactive_threshold=300.0, mem_storage=True))
        self._subs[partition] = (sub, start)
        return sub

    async def _read(self, checkpoint: Checkpoint, max_events: int) -> Batch:
        owned = sorted(self.leases())
        if owned:
            await self._js()  # fails at once while NATS is away
        for p in set(self._subs) - set(owned):  # a lease lost: its consumer goes
            await _unsubscribe(self._subs.pop(p)[0])
        new = dict(checkpoint)
        lines: list[bytes] = []
        ids: list[tuple[str, int]] = []
        share = max(1, max_events // max(1, len(owned)))
        more = False
        for p in owned:
            name = subject(self.spec.name, p)
            start = checkpoint.get(name, Position(0, 0)).seq + 1
            sub = await self._consumer(p, start)
            pending = (await sub.consumer_info()).num_pending or 0
            if not pending:
                continue
            try:
                msgs = await sub.fetch(min(pending, share), timeout=self.spec.timeout)
            except (TimeoutError, NatsTimeout):
                continue
            more = more or pending > len(msgs)
            last = start - 1
            for m in msgs:
                last = m.metadata.sequence.stream
                record = self.payloads.open(m.data, m.headers, last)
                if record is None:  # counted and logged: the checkpoint moves past it
                    continue
                event_id = _event_id(record)  # the record's own id, whatever the header
                lines.append(record)
                ids.append((event_id, p))
            self._subs[p] = (sub, last + 1)
            new[name] = Position(last, 0)
        lines, ids = self._unseen(lines, ids)
        return Batch(lines, new, more, ids)

    def _unseen(self, lines: list[bytes], ids: list[tuple[str, int]]
                ) -> tuple[list[bytes], list[tuple[str, int]]]:
        """Drop the events counted before (and repeats within the batch)."""
        if not ids:
            return lines, ids
        known = self.event_ids.known([i for i, _ in ids])
        keep_lines, keep_ids = [], []
        for line, (event_id, p) in zip(lines, ids, strict=True):
            if not event_id:  # not a record: the Monitor counts it invalid
                keep_lines.append(line)
                continue
            if event_id in known:
                self.duplicates += 1
                continue
            known.add(event_id)
            keep_lines.append(line)
            keep_ids.append((event_id, p))
        return keep_lines, keep_ids

    async def _backlog(self, checkpoint: Checkpoint) -> Backlog:
        events = 0
        oldest: float | None = None
        js = await self._js()
        self.lag = {}
        for p in sorted(self.leases()):
            name = subject(self.spec.name, p)
            start = checkpoint.get(name, Position(0, 0)).seq + 1
            sub = await self._consumer(p, start)
            pending = (await sub.consumer_info()).num_pending or 0
            events += pending
            t = None
            if pending:
                try:
                    msg = await js.get_msg(self.spec.name, seq=start, subject=name, next=True)
                    record = self.payloads.peek(msg.data or b"{}", msg.headers)
                    t = parse_time(orjson.loads(record or b"{}")["time"])
                    oldest = t if oldest is None else min(oldest, t)
                except Exception:  # lag is a gauge: never a failed tick
                    log.debug("no time for the oldest record of %s", name)
            self.lag[p] = (pending, t)
        return Backlog(events, 0, oldest, 0)

    async def _forget(self) -> None:
        subs, self._subs = list(self._subs.values()), {}
        for sub, _ in subs:
            try:
                await asyncio.wait_for(_unsubscribe(sub), self.spec.timeout)
            except TimeoutError:
                pass

    async def _close(self) -> None:
        for sub, _ in self._subs.values():
            await _unsubscribe(sub)
        self._subs.clear()
        if self._nc is not None:
            await self._nc.close()


SKEW_SECONDS = 300.0  # a record's own time vs the server's: a replica's clock may run ahead


def read_since(spec: StreamSpec, partitions: Iterable[int], since: float | None,
               batch: int = 1000, keys: LogKeys | None = None) -> list[bytes]:
    """Every record on the partitions' subjects that the server received from ``since`` on
    (all of them when None), each partition oldest first: for an export, not the Monitor (no
    checkpoint, no lease). A record reaches the server after its own ``time``, so the caller,
    which filters on that time, misses none; the server's clock is given ``SKEW_SECONDS``.
    Sealed records are opened with ``keys`` as the Monitor opens them (``LogKeyError`` for
    one sealed by a key that is not configured)."""
    payloads = PayloadOpener(keys, spec.name)

    async def read() -> list[bytes]:
        nc = await connect(spec, reconnect=False)
        try:
            js = nc.jetstream(timeout=spec.timeout)
            out: list[bytes] = []
            # what the stream held when the export began: under sustained traffic the
            # partition never runs dry, and an export must end
            until = (await js.stream_info(spec.name)).state.last_seq or 0
            for p in partitions:
                out.extend(await _partition_since(js, spec, p, since, batch, payloads, until))
            return out
        finally:
            await nc.close()

    return asyncio.run(read())


def check_keys(spec: StreamSpec, keys: LogKeys | None) -> None:
    """Raise ``LogKeyError`` when the oldest or the newest record of a partition is sealed by
    a key that is not configured: at start, as the local log's ``check_keys``, a wrong key
    (or a replica sealing with a key this one lacks) is a clear error. NATS unreachable or
    the stream missing: nothing to check here (the Monitor checks each record it reads)."""
    payloads = PayloadOpener(keys, spec.name)

    async def check() -> None:
        try:
            nc = await connect(spec, reconnect=False)
        except Exception:
            return
        try:
            js = nc.jetstream(timeout=spec.timeout)
            for p in range(spec.partitions):
                name = subject(spec.name, p)
                for first in (True, False):
                    try:
                        msg = await (js.get_msg(spec.name, seq=1, subject=name, next=True)
                                     if first else js.get_last_msg(spec.name, name))
                    except Exception:  # no such record, or no stream
                        continue
                    frame = (one_frame(msg.data or b"")
                             if is_sealed(msg.data or b"", msg.headers) else None)
                    if frame is not None:
                        payloads.check(frame.key_id, msg.seq or 0)
        finally:
            await nc.close()

    asyncio.run(check())


async def _partition_since(js: JetStreamContext, spec: StreamSpec, partition: int,
                           since: float | None, batch: int,
                           payloads: PayloadOpener, until: int) -> list[bytes]:
    start = (datetime.fromtimestamp(since - SKEW_SECONDS, UTC) if since is not None
             else None)
    sub = await js.pull_subscribe(
        subject(spec.name, partition), stream=spec.name,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL if start is None else DeliverPolicy.BY_START_TIME,
            opt_start_time=start, ack_policy=AckPolicy.NONE, inactive_threshold=60.0,
            mem_storage=True))
    out: list[bytes] = []
    try:
        while pending := (await sub.consumer_info()).num_pending or 0:
            for m in await sub.fetch(min(pending, batch), timeout=spec.timeout):
                if m.metadata.sequence.stream > until:
                    return out
                record = payloads.open(m.data, m.headers, m.metadata.sequence.stream)
                if record is not None:
                    out.append(record)
    finally:
        await _unsubscribe(sub)
    return out


async def _unsubscribe(sub: Any) -> None:
    try:
        await sub.unsubscribe()
    except Exception:  # the consumer expires on its own (inactive_threshold)
        log.debug("unsubscribe failed", exc_info=True)


def _event_id(data: bytes) -> str:
    try:
        return route_of(data)[0]
    except ValueError:
        return ""

