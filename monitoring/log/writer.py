"""The prediction log: CloudEvents-shaped JSON lines in per-writer segment files.

Layout under the log directory (one *stream* per writer process lifetime)::

    {worker}-{pid}-{start_ns}.{seq:06d}.open    the segment being written (at most one a stream)
    {worker}-{pid}-{start_ns}.{seq:06d}.jsonl   closed segments, renamed atomically on rotation

A respawned worker has a new pid and start time, so it never appends to a file a dead
writer may have torn. Every line is one complete JSON record; a killed writer can leave one
torn last line in its ``.open`` segment, which readers never consume. With encryption at rest
(``log.encryption.key``) each line is sealed into one AES-256-GCM frame instead
(``monitoring.log.frames``; the names stay the same), and a torn last frame is treated as a
torn last line.

Durability: the writer takes the queue every ``flush_seconds`` (50 ms) and flushes each batch
to the OS, so a killed *process* loses only what was still queued in memory (at most that
interval of records); it fsyncs every ``fsync_seconds`` (a crashed *machine* loses at most
that window). A full queue, an unwritable directory or a directory over its size cap drops the
newest record and counts it by reason; nothing blocks the caller.

This module is the writing side (records and segments; ``monitoring.log.sink`` is what
producers hand events to); ``monitoring.log.reader`` reads the segments back.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from models.card import Feature
from monitoring.log.events import PredictionEvent
from monitoring.log.frames import LogKeys, Sealer
from monitoring.log.ids import new_id
from monitoring.log.queue import RecordQueue

log = logging.getLogger("vigil.log")

PREDICTION = "vigil.prediction.v1"
FEEDBACK = "vigil.feedback.v1"


# --------------------------------------------------------------------------- records


_SECOND: tuple[int, str] = (-1, "")  # the last whole second formatted (swapped whole)


def iso_time(ts: float) -> str:
    """``ts`` as RFC 3339 UTC with microseconds, exactly as ``datetime.isoformat`` gives it
    (rounded half to even), with the date and time of day formatted once per second: the
    ``datetime`` round trip was 3% of the Monitor's CPU, one per record it writes."""
    global _SECOND
    sec = math.floor(ts)
    us = round((ts - sec) * 1e6)
    if us >= 1_000_000:
        sec, us = sec + 1, us - 1_000_000
    cached = _SECOND
    if cached[0] != sec:
        cached = _SECOND = (sec, datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{cached[1]}.{us:06d}Z"


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


_LAYOUTS: dict[int, tuple[Sequence[Feature], list[str], list[tuple[int, Feature]]]] = {}


def _layout(features: Sequence[Feature]) -> tuple[list[str], list[tuple[int, Feature]]]:
    """The names and the decoded (category, bool) columns of a card's features, computed once
    per features object (a card's tuple lives as long as its version is loaded)."""
    cached = _LAYOUTS.get(id(features))
    if cached is None or cached[0] is not features:
        if len(_LAYOUTS) > 256:
            _LAYOUTS.clear()
        cached = _LAYOUTS[id(features)] = (
            features, [f.name for f in features],
            [(i, f) for i, f in enumerate(features) if f.dtype in ("category", "bool")])
    return cached[1], cached[2]


def named_inputs(features: Sequence[Feature], matrix: np.ndarray) -> list[dict[str, Any]]:
    """Rows of the model's input matrix as ``{feature: value}``, categories and booleans
    decoded back to what the client sent, NaN as null."""
    names, special = _layout(features)
    rows = matrix.tolist()
    if not special and not np.isnan(matrix).any():  # the common case: numbers only
        return [dict(zip(names, row, strict=True)) for row in rows]
    out = []
    for row in rows:
        for i, value in enumerate(row):
            if value != value:  # NaN
                row[i] = None
        for i, f in special:
            v = row[i]
            if v is not None:
                row[i] = (f.categories or ())[int(v)] if f.dtype == "category" else bool(v)
        out.append(dict(zip(names, row, strict=True)))
    return out


def prediction_record(event: PredictionEvent, sample_rate: float = 1.0,
                      inputs: Any = None) -> dict[str, Any]:
    """The CloudEvents record of one answered request (or one shadow's answer to it).
    ``inputs`` may carry the named inputs already rendered (an ``orjson.Fragment``); an
    event's ``inputs`` are a matrix named by its ``features``, or named records (a list: a
    shadow's, run by the Monitor on the records it read) written as they are."""
    if inputs is None and isinstance(event.inputs, list):  # named records already
        inputs = event.inputs
    elif inputs is None and event.inputs is not None and event.features is not None:
        inputs = named_inputs(event.features, event.inputs)
    data: dict[str, Any] = {
        "request_id": event.request_id, "model": event.model, "version": event.version,
        "variant": event.variant, "rows": event.rows, "inputs": inputs,
        "outputs": event.outputs, "latency_seconds": event.latency_seconds,
        "status": event.status, "error": event.error,
    }
    if event.shadows:
        data["shadows"] = list(event.shadows)
    if event.primary_version is not None:
        data["primary_version"] = event.primary_version
        data["agreement"] = event.agreement
    if sample_rate != 1.0:
        data["sample_rate"] = sample_rate
    return {"specversion": "1.0", "id": new_id(),
            "source": f"/vigil/{event.model}/{event.variant}", "type": PREDICTION,
            "time": iso_time(event.time), "datacontenttype": "application/json", "data": data}


def feedback_record(model: str, item: dict[str, Any], ts: float) -> dict[str, Any]:
    """The record of one ground-truth label: ``item`` holds request_id, label or value, row."""
    return {"specversion": "1.0", "id": new_id(), "source": f"/vigil/{model}/feedback",
            "type": FEEDBACK, "time": iso_time(ts), "datacontenttype": "application/json",
            "data": {"model": model, **item}}


def encode(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


# --------------------------------------------------------------------------- segments


class SegmentWriter(RecordQueue):
    """A bounded queue in front of one thread that appends to this process's segments.

    ``submit`` never blocks: it returns False (and counts the drop) when the queue is full.
    ``render`` turns a queued item into one line of bytes, in the writer thread; with
    ``keys`` each line is sealed into its own encrypted frame (``monitoring.log.frames``).
    """

    def __init__(self, directory: Path, stream: str, render: Callable[[Any], bytes], *,
                 queue_size: int = 10_000, fsync_seconds: float = 0.5,
                 segment_max_bytes: int = 64 * 1024 * 1024, segment_max_seconds: float = 3600.0,
                 max_total_bytes: int = 2 * 1024**3, flush_seconds: float = 0.05,
                 on_drop: Callable[[str, int], None] = lambda reason, n: None,
                 on_write: Callable[[int], None] = lambda n: None,
                 keys: LogKeys | None = None) -> None:
        self.directory = Path(directory)
        self.stream = stream
        self._render = render
        self._seal = Sealer(keys.active).seal if keys and keys.active else None
        super().__init__(queue_size, on_drop)
        self._wake_at = max(1, queue_size // 4)
        self._flush_seconds = min(flush_seconds, fsync_seconds)
        self._fsync_seconds = fsync_seconds
        self._segment_max_bytes = segment_max_bytes
        self._segment_max_seconds = segment_max_seconds
        self._max_total_bytes = max_total_bytes
        self._on_write = on_write
        self._wake = threading.Event()
        self._seq = 0
        self._file: Any = None
        self._path: Path | None = None
        self._opened_at = 0.0
        self._written = 0
        self._dirty = False
        self._last_fsync = time.monotonic()
        self._broken_until = 0.0
        self._total_checked = 0.0
        self._total = 0  # the directory's bytes: measured once a second, plus what we wrote
        self.records_written = 0
        self.failing = False  # the last write failed or reached the cap: labels get a 503
        self._thread = threading.Thread(target=self._run, name=f"log-{stream}", daemon=True)
        self._thread.start()

    # --- caller side (any thread, never blocks): RecordQueue's, and a wake-up
    def submit(self, item: Any) -> bool:
        if len(self._queue) >= self._queue_size or self._stop:
            self._drop("queue_full", 1)
            return False
        self._queue.append(item)
        # The writer wakes on its own every flush interval and takes the whole queue in one
        # write; waking it per record would cost a thread switch and a syscall per request.
        if len(self._queue) >= self._wake_at and not self._wake.is_set():
            self._wake.set()
        return True

    def probe(self) -> bool:
        """Could a record be written now? Makes the directory, writes and removes a small
        file, and checks the size cap. Sets ``failing`` either way, so a caller that must know
        before it takes a record (the NATS publisher's spill, for ``/feedback``) learns of a
        broken directory before a record is lost on it, and of a mended one before any record
        was risked on it."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / f".probe-{self.stream}"
            with open(probe, "wb") as f:
                f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())
            probe.unlink()
        except OSError:
            self.failing = True
            return False
        self._total_checked = time.monotonic()
        self._total = directory_bytes(self.directory)
        self.failing = self._over_cap
        if not self.failing:
            self._broken_until = 0.0
        return not self.failing

    @property
    def _over_cap(self) -> bool:
        return self._total > self._max_total_bytes

    def close(self, timeout: float = 10.0) -> None:
        """Drain the queue, fsync, and close the segment as ``.jsonl`` (graceful shutdown)."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout)

    # --- writer thread

    def _run(self) -> None:
        while True:
            self._wake.wait(self._flush_seconds)
            self._wake.clear()
            stopping = self._stop
            batch = []
            while self._queue:
                self._in_hand += 1  # before: never counted in neither place
                batch.append(self._queue.popleft())
            if batch:
                try:
                    self._write(batch)
                except Exception:  # the writer thread must outlive any one batch
                    log.exception("prediction log writer failed on a batch")
                    self._drop("io_error", len(batch))
                finally:
                    self._in_hand = 0
            now = time.monotonic()
            if self._file is not None and (stopping or now - self._last_fsync
                                           >= self._fsync_seconds):
                self._sync()
            if self._file is not None and (self._written >= self._segment_max_bytes or
                                           now - self._opened_at >= self._segment_max_seconds):
                self._close_segment()
            if stopping:
                if self._file is not None:
                    self._close_segment()
                return

    def _write(self, batch: list[Any]) -> None:
        now = time.monotonic()
        if now < self._broken_until:
            self._drop("io_error", len(batch))
            return
        if now - self._total_checked >= 1.0:
            self._total_checked = now
            self._total = directory_bytes(self.directory)
        if self._over_cap:
            self.failing = True
            self._drop("log_full", len(batch))
            return
        lines = []
        seal = self._seal
        for n, item in enumerate(batch, 1):
            try:
                line = self._render(item)
                lines.append(line if seal is None else seal(line))
            except Exception:
                log.exception("could not render a log record")
                self._drop("render_error", 1)
            if n % 16 == 0:
                time.sleep(0)  # let the event loop thread have the GIL between small runs
        if not lines:
            return
        i = done = 0
        try:
            while i < len(lines):  # rotate inside a batch: no segment grows past the cap
                if self._file is None:
                    self._open_segment()
                room = self._segment_max_bytes - self._written
                chunk: list[bytes] = []
                size = 0
                while i < len(lines) and (not chunk or size + len(lines[i]) <= room):
                    chunk.append(lines[i])
                    size += len(lines[i])
                    i += 1
                self._file.write(b"".join(chunk))
                self._file.flush()
                self._written += size
                self._total += size
                self._dirty = True
                done = i
                self.failing = self._over_cap  # at the cap: labels are refused from now on
                self.records_written += len(chunk)
                self._on_write(len(chunk))
                if self._written >= self._segment_max_bytes:
                    self._close_segment()
        except OSError as exc:
            log.error("prediction log %s is not writable (%s); dropping records for 1 s",
                      self.directory, exc)
            self.failing = True
            self._drop("io_error", len(lines) - done)
            self._broken_until = time.monotonic() + 1.0
            self._abandon()

    def _open_segment(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        self._path = self.directory / f"{self.stream}.{self._seq:06d}.open"
        self._file = open(self._path, "ab", buffering=1024 * 1024)  # noqa: SIM115
        self._opened_at = time.monotonic()
        self._written = 0

    def _sync(self) -> None:
        if not self._dirty:
            return
        try:
            os.fsync(self._file.fileno())
        except OSError as exc:
            log.error("fsync of %s failed: %s", self._path, exc)
        self._dirty = False
        self._last_fsync = time.monotonic()

    def _close_segment(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            assert self._path is not None
            os.replace(self._path, self._path.with_suffix(".jsonl"))
            fsync_dir(self.directory)
        except OSError as exc:
            log.error("closing segment %s failed: %s", self._path, exc)
        self._file, self._path, self._dirty = None, None, False

    def _abandon(self) -> None:
        try:
            if self._file is not None:
                self._file.close()
        except OSError:
            pass
        self._file, self._path, self._dirty = None, None, False


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def directory_bytes(directory: Path) -> int:
    total = 0
    try:
        for entry in os.scandir(directory):
            try:
                total += entry.stat().st_size
            except FileNotFoundError:
                pass
    except OSError:
        return 0
    return total
