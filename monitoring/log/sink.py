"""The prediction log's sink: what a Gateway worker (and the Monitor's shadow lanes) hand
their events to. ``LogSink`` samples per variant and queues for a ``SegmentWriter``, whose
thread renders each record with ``render`` or a ``Renderer``."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np
import orjson

from monitoring.log.events import PredictionEvent
from monitoring.log.pii import Redactor
from monitoring.log.writer import (
    encode,
    feedback_record,
    named_inputs,
    prediction_record,
)


def render(item: tuple[Any, ...]) -> bytes:
    """Render a queued ``("p", event, sample_rate)`` or ``("f", model, item, ts)`` tuple."""
    if item[0] == "p":
        return encode(prediction_record(item[1], item[2]))
    return encode(feedback_record(item[1], item[2], item[3]))


class Renderer:
    """``render`` for one writer thread, remembering the named inputs it rendered last: a
    request and its shadows share one input matrix, so the shadow's record reuses the JSON
    (for a 1,000-row batch that is most of the record). At most ``entries`` matrices and
    ``max_bytes`` of JSON are kept; the matrix itself is held so its id is not reused.
    ``redactor`` drops and hashes what the card marks as personal data, and the request ids
    when it hashes them (``monitoring.log.pii``)."""

    def __init__(self, entries: int = 16, max_bytes: int = 16 * 2**20,
                 redactor: Redactor | None = None) -> None:
        self.entries, self.max_bytes = entries, max_bytes
        self._cache: OrderedDict[int, tuple[np.ndarray, Any, bytes]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self._redactor = redactor

    def __call__(self, item: tuple[Any, ...]) -> bytes:
        r = self._redactor
        if r is not None and r.hash_request_ids:
            item = self._hash_ids(r, item)
        if item[0] != "p" or item[1].inputs is None or item[1].features is None:
            return render(item)
        event = item[1]
        key = id(event.inputs)
        cached = self._cache.get(key)
        if cached is not None and cached[0] is event.inputs and (
                cached[1] is event.features or cached[1] == event.features):
            self.hits += 1
            self._cache.move_to_end(key)
            text = cached[2]
        else:
            rows = (named_inputs(event.features, event.inputs) if r is None
                    else r.inputs(event.features, event.inputs))
            text = orjson.dumps(rows)
            if cached is not None:
                self._bytes -= len(cached[2])
            self._cache[key] = (event.inputs, event.features, text)
            self._cache.move_to_end(key)
            self._bytes += len(text)
            while len(self._cache) > self.entries or self._bytes > self.max_bytes:
                _, (_, _, old) = self._cache.popitem(last=False)
                self._bytes -= len(old)
        return encode(prediction_record(event, item[2], orjson.Fragment(text)))

    @staticmethod
    def _hash_ids(r: Redactor, item: tuple[Any, ...]) -> tuple[Any, ...]:
        if item[0] == "p":
            return ("p", replace(item[1], request_id=r.request_id(item[1].request_id)),
                    *item[2:])
        label = dict(item[2])
        if label.get("request_id") is not None:
            label["request_id"] = r.request_id(str(label["request_id"]))
        return ("f", item[1], label, *item[3:])


class RecordWriter(Protocol):
    """What a ``LogSink`` queues for: a ``SegmentWriter``, or the NATS publisher
    (``monitoring.log.publisher.NatsWriter``). Never blocks the caller."""

    def submit(self, item: Any) -> bool: ...

    def room(self) -> int: ...

    def close(self, timeout: float = 10.0) -> None: ...

    @property
    def failing(self) -> bool: ...

    @property
    def queue_size(self) -> int: ...

    @property
    def queue_depth(self) -> int: ...

    @property
    def unwritten(self) -> int: ...


class LogSink:
    """The ``EventSink`` of a Gateway worker: samples per variant, then queues the event for
    the segment writer (which renders it off the request path)."""

    def __init__(self, writer: RecordWriter, sample: dict[str, float] | None = None,
                 rand: Callable[[], float] | None = None) -> None:
        import random

        self.writer = writer
        self._sample = dict(sample or {})
        self._rand = rand or random.random

    def emit(self, event: PredictionEvent) -> None:
        rate = self._sample.get(event.variant, 1.0)
        if rate < 1.0 and self._rand() >= rate:
            return
        self.writer.submit(("p", event, rate))

    def wait_for_room(self, n: int, timeout: float) -> bool:
        """Block until the queue has room for ``n`` records (or all it holds), for as long
        as the writer makes progress, giving up after ``timeout`` s without any: for a
        producer that may wait, as the Monitor's shadow lanes may (a batch of thousands of
        answers at once), unlike a request. True if there is room."""
        room = self.writer.room()
        if room >= n:
            return True
        deadline = time.monotonic() + timeout
        while room < min(n, self.writer.queue_size):
            if time.monotonic() >= deadline or self.writer.failing:
                return False
            time.sleep(0.002)
            now_room = self.writer.room()
            if now_room > room:  # the writer took records: progress
                deadline = time.monotonic() + timeout
            room = now_room
        return room > 0

    def feedback(self, model: str, items: Sequence[dict[str, Any]], ts: float) -> bool:
        """Queue every label or none: False when the queue has no room for the whole batch or
        the log is failing (the caller answers 503 and the client retries; labels are never
        half-taken, nor taken to be dropped)."""
        if self.writer.failing or self.writer.room() < len(items):
            return False
        for item in items:
            self.writer.submit(("f", model, item, ts))
        return True

    def close(self) -> None:
        self.writer.close()

