"""Reading the prediction log: the segment files of every writer stream, from checkpointed
positions. Only complete lines are read: a torn last line (a writer killed mid-write) is never
consumed, and a segment renamed (rotated) or deleted while it is read is followed or skipped.
A segment of encrypted frames (``monitoring.log.frames``) reads the same way, frame by frame:
a torn last frame is never consumed, and a frame that fails authentication is counted, logged
with its segment and offset, and skipped.

``EventLog`` is the seam for a shared log (NATS JetStream, Redis Streams, Kafka: see
docs/architecture.md, Scale-out); ``LocalEventLog`` implements it over the segment files
``monitoring.log.writer`` writes.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from monitoring.log.frames import LogKeyError, LogKeys, Opener, first_key_id, is_framed, split
from monitoring.log.writer import SegmentWriter, parse_time
from store import Transaction

log = logging.getLogger("vigil.log")

SEGMENT_RE = re.compile(
    r"^(?P<stream>[A-Za-z0-9_]+-\d+-\d+)\.(?P<seq>\d{6})\.(?P<state>open|jsonl)$")


@dataclass(frozen=True)
class Segment:
    stream: str
    seq: int
    path: Path
    closed: bool
    size: int
    mtime: float

    @property
    def pid(self) -> int:
        return int(self.stream.split("-")[-2])


def list_segments(directory: Path) -> dict[str, list[Segment]]:
    """Every stream's segments in order. A segment renamed while listing shows up once."""
    streams: dict[str, dict[int, Segment]] = {}
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return {}
    for entry in entries:
        m = SEGMENT_RE.match(entry.name)
        if not m:
            continue
        try:
            st = entry.stat()
        except FileNotFoundError:  # rotated or deleted between scandir and stat
            continue
        seg = Segment(m["stream"], int(m["seq"]), Path(entry.path), m["state"] == "jsonl",
                      st.st_size, st.st_mtime)
        known = streams.setdefault(seg.stream, {}).get(seg.seq)
        if known is None or seg.closed:
            streams[seg.stream][seg.seq] = seg
    return {s: [segs[k] for k in sorted(segs)] for s, segs in streams.items()}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Position:
    """Where a stream's reader stands: the segment number and the byte offset within it."""

    seq: int
    offset: int


Checkpoint = dict[str, Position]


@dataclass
class Batch:
    lines: list[bytes]  # complete lines, in order within each stream, streams one after another
    checkpoint: Checkpoint  # the position after the last of ``lines``
    more: bool = False  # a stream stopped at its share of ``max_events``: read again now
    # (event id, partition) of each record a partitioned log returned, for ``commit``
    ids: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class Backlog:
    events: int  # complete lines not yet read
    bytes: int
    oldest_time: float | None  # the time of the oldest unread record
    torn_tails: int  # dead writers' segments ending in a partial line (never read)


class EventLog(Protocol):
    def append(self, lines: Iterable[bytes]) -> None: ...
    def read(self, checkpoint: Checkpoint, max_events: int) -> Batch: ...
    def backlog(self, checkpoint: Checkpoint) -> Backlog: ...
    def commit(self, tx: Transaction, batch: Batch, now: float) -> None:
        """The log's part of the step's transaction (a shared log fences its leases)."""
    def streams(self) -> set[str]: ...
    def delete_consumed(self, checkpoint: Checkpoint, *, older_than: float,
                        max_total_bytes: int) -> list[Path]: ...


class LocalEventLog:
    """``EventLog`` over the segment directory. Reads complete lines only, tolerates a torn
    last line and a segment renamed (rotated) or deleted while it is being read. With
    ``keys`` it writes encrypted frames and opens them; ``on_bad_frame(segment, offset)`` is
    called for each frame that fails authentication (``bad_frames`` counts them)."""

    READ_CHUNK = 4 * 1024 * 1024

    def __init__(self, directory: Path, stream: str | None = None, *,
                 keys: LogKeys | None = None,
                 on_bad_frame: Callable[[Path, int], None] | None = None) -> None:
        self.directory = Path(directory)
        self._stream = stream
        self._writer: SegmentWriter | None = None
        self.keys = keys
        self._opener = Opener(keys)
        self._on_bad_frame = on_bad_frame
        self.bad_frames = 0

    def writer(self, stream: str, render: Callable[[Any], bytes] = bytes,
               **kw: Any) -> SegmentWriter:
        return SegmentWriter(self.directory, stream, render, keys=self.keys, **kw)

    def append(self, lines: Iterable[bytes]) -> None:
        """Synchronous append (tests and tools): one stream for this object, fsynced."""
        if self._writer is None:
            self._writer = self.writer(self._stream or f"tool-{os.getpid()}-{time.time_ns()}")
        for line in lines:
            while not self._writer.submit(line):
                time.sleep(0.01)

    def commit(self, tx: Transaction, batch: Batch, now: float) -> None:
        """Nothing to add: the checkpoint is the whole of the local log's state."""

    def streams(self) -> set[str]:
        return set(list_segments(self.directory))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def read(self, checkpoint: Checkpoint, max_events: int) -> Batch:
        out: list[bytes] = []
        new = dict(checkpoint)
        streams = sorted(list_segments(self.directory).items())
        share = max(1, max_events // max(1, len(streams)))  # no stream starves the others
        more = False
        for stream, segments in streams:
            if len(out) >= max_events:
                more = True
                break
            limit = min(max_events, len(out) + share)
            pos = new.get(stream, Position(segments[0].seq, 0))
            for i, seg in enumerate(segments):
                if seg.seq < pos.seq:
                    continue
                if seg.seq > pos.seq:
                    pos = Position(seg.seq, 0)
                lines, consumed = self._read_segment(seg, pos.offset, limit - len(out))
                out.extend(lines)
                pos = Position(seg.seq, pos.offset + consumed)
                if len(out) >= limit:
                    more = True
                    break
                done = seg.closed and pos.offset >= self._size(seg)
                if done and i + 1 < len(segments):
                    pos = Position(segments[i + 1].seq, 0)
                    continue
                break
            new[stream] = pos
        return Batch(out, new, more)

    def _size(self, seg: Segment) -> int:
        try:
            return seg.path.stat().st_size
        except FileNotFoundError:
            return seg.size

    def _open(self, seg: Segment) -> Any:
        try:
            return open(seg.path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            if seg.closed:
                raise
            return open(seg.path.with_suffix(".jsonl"), "rb")  # rotated since listing  # noqa: SIM115

    def _read_segment(self, seg: Segment, offset: int, budget: int) -> tuple[list[bytes], int]:
        try:
            f = self._open(seg)
        except FileNotFoundError:
            log.warning("segment %s vanished before it was read", seg.path)
            return [], 0
        with f:
            framed = is_framed(f.read(1))
            f.seek(offset)
            if framed:
                return self._read_frames(f, seg, offset, budget)
            return self._read_lines(f, budget)

    def _read_lines(self, f: Any, budget: int) -> tuple[list[bytes], int]:
        lines: list[bytes] = []
        consumed = 0
        tail = b""
        while len(lines) < budget:
            chunk = f.read(self.READ_CHUNK)
            if not chunk:
                break
            data = tail + chunk
            end = data.rfind(b"\n")
            if end < 0:
                tail = data
                continue
            parts = data[:end].split(b"\n")
            tail = data[end + 1:]
            if len(lines) + len(parts) > budget:
                parts = parts[:budget - len(lines)]
                consumed += sum(len(p) + 1 for p in parts)
                lines.extend(parts)
                return lines, consumed
            lines.extend(parts)
            consumed += end + 1
        return lines, consumed

    def _read_frames(self, f: Any, seg: Segment, offset: int,
                     budget: int) -> tuple[list[bytes], int]:
        """Complete frames from ``offset``, opened; a closed segment's bytes are all final,
        so a frame whose length runs past its end is corrupt rather than torn."""
        lines: list[bytes] = []
        consumed = 0
        tail = b""
        while len(lines) < budget:
            chunk = f.read(self.READ_CHUNK)
            data = tail + chunk
            frames, used, skipped = split(data, final=not chunk and seg.closed)
            if len(lines) + len(frames) > budget:
                frames = frames[:budget - len(lines)]
                used = frames[-1].end if frames else 0
            for at in skipped:
                if at < used:
                    self._bad(seg, offset + consumed + at, "is not a frame")
            for frame in frames:
                record = self._opener.open(frame)
                if record is None:
                    self._bad(seg, offset + consumed + frame.offset,
                              "failed authentication" if self._opener.known(frame.key_id)
                              else f"sealed by unknown key id {frame.key_id.hex()}")
                else:
                    lines.append(record[:-1] if record.endswith(b"\n") else record)
            consumed += used
            tail = data[used:]
            if not chunk or len(lines) >= budget:
                break
        return lines, consumed

    def _bad(self, seg: Segment, offset: int, why: str) -> None:
        self.bad_frames += 1
        log.error("prediction log %s: the frame at byte %d %s; skipped, never parsed",
                  seg.path, offset, why)
        if self._on_bad_frame is not None:
            try:
                self._on_bad_frame(seg.path, offset)
            except Exception:  # a metric must never stop the reader
                log.exception("bad-frame callback failed")

    def backlog(self, checkpoint: Checkpoint) -> Backlog:
        events = nbytes = torn = 0
        oldest: float | None = None
        for stream, segments in list_segments(self.directory).items():
            pos = checkpoint.get(stream, Position(segments[0].seq, 0))
            first = True
            for seg in segments:
                if seg.seq < pos.seq:
                    continue
                offset = pos.offset if seg.seq == pos.seq else 0
                try:
                    with self._open(seg) as f:
                        framed = is_framed(f.read(1))
                        f.seek(offset)
                        data = f.read()
                except FileNotFoundError:
                    continue
                n, end, head = self._complete(framed, data)
                events += n
                nbytes += end
                if n and first:
                    first = False
                    try:
                        t = parse_time(orjson.loads(head)["time"])
                        oldest = t if oldest is None else min(oldest, t)
                    except (ValueError, KeyError, TypeError):
                        pass
                if end < len(data) and not seg.closed and not pid_alive(seg.pid):
                    torn += 1
        return Backlog(events, nbytes, oldest, torn)

    def _complete(self, framed: bool, data: bytes) -> tuple[int, int, bytes]:
        """How many complete records ``data`` holds, the bytes they take, and the first."""
        if not framed:
            end = data.rfind(b"\n") + 1
            n = data.count(b"\n", 0, end)
            return n, end, data[:data.index(b"\n")] if n else b""
        frames, end, _ = split(data)
        head = self._opener.open(frames[0]) if frames else None
        return len(frames), end, head or b""

    def check_keys(self) -> None:
        """Raise ``LogKeyError`` naming the first segment sealed by a key that is not
        configured (or any segment of frames when no key is): at start, a wrong key is a
        clear error rather than a log whose every frame fails. A directory that cannot be
        listed holds nothing to check (its writers drop and count)."""
        try:
            streams = list_segments(self.directory)
        except OSError:
            return
        for segments in streams.values():
            for seg in segments:
                try:
                    with self._open(seg) as f:
                        kid = first_key_id(f.read(64))
                except FileNotFoundError:
                    continue
                if kid is None or self._opener.known(kid):
                    continue
                if self.keys is None:
                    raise LogKeyError("log.encryption.key", f"{seg.path.name} is encrypted "
                                      "and no key is configured")
                raise LogKeyError("log.encryption.key", (
                    f"{seg.path.name} was sealed by key id {kid.hex()}, which is neither the "
                    "key nor one of log.encryption.previous_keys (a wrong key, or a rotated "
                    "one missing from previous_keys)"))

    def delete_consumed(self, checkpoint: Checkpoint, *, older_than: float,
                        max_total_bytes: int) -> list[Path]:
        """Retention: delete segments the reader has wholly consumed when they are older than
        ``older_than`` (a Unix time), or oldest first while the directory is over
        ``max_total_bytes``. A live writer's open segment is never deleted; a dead writer's
        is, once consumed up to its torn tail."""
        candidates: list[Segment] = []
        total = 0
        for stream, segments in list_segments(self.directory).items():
            pos = checkpoint.get(stream)
            for seg in segments:
                total += seg.size
                if pos is None:
                    continue
                consumed = seg.seq < pos.seq or (seg.seq == pos.seq and pos.offset >= seg.size)
                if not seg.closed:
                    if pid_alive(seg.pid):
                        continue
                    consumed = seg.seq < pos.seq or (seg.seq == pos.seq and self._only_tail(
                        seg, pos.offset))
                if consumed:
                    candidates.append(seg)
        candidates.sort(key=lambda s: s.mtime)
        deleted = []
        for seg in candidates:
            if seg.mtime < older_than or total > max_total_bytes:
                try:
                    seg.path.unlink()
                except FileNotFoundError:
                    continue
                total -= seg.size
                deleted.append(seg.path)
        return deleted

    def _only_tail(self, seg: Segment, offset: int) -> bool:
        try:
            with open(seg.path, "rb") as f:
                framed = is_framed(f.read(1))
                f.seek(offset)
                return self._complete(framed, f.read())[0] == 0
        except FileNotFoundError:
            return True
