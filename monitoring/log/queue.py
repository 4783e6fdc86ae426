"""The caller's side of a log writer: a bounded queue that never blocks the request thread,
drained by the writer's own thread. ``SegmentWriter`` (local segments) and ``NatsWriter``
(JetStream) are both one."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("vigil.log")


class RecordQueue:
    """``submit`` returns False and counts a ``queue_full`` drop instead of waiting; the writer
    thread takes items from ``_queue`` and holds ``_in_hand`` of them until they are written."""

    def __init__(self, queue_size: int,
                 on_drop: Callable[[str, int], None] = lambda reason, n: None) -> None:
        self._queue: deque[Any] = deque()
        self._queue_size = queue_size
        self._in_hand = 0  # records taken from the queue, not yet written
        self._stop = False
        self._on_drop = on_drop
        self.dropped: dict[str, int] = {}

    def submit(self, item: Any) -> bool:
        if len(self._queue) >= self._queue_size or self._stop:
            self._drop("queue_full", 1)
            return False
        self._queue.append(item)
        return True

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def unwritten(self) -> int:
        """Records taken and not yet written (queued, or in the writer's hands)."""
        return len(self._queue) + self._in_hand

    @property
    def queue_size(self) -> int:
        return self._queue_size

    def room(self) -> int:
        """Free places in the queue right now."""
        return 0 if self._stop else max(0, self._queue_size - len(self._queue))

    def _drop(self, reason: str, n: int) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n
        try:
            self._on_drop(reason, n)
        except Exception:  # metrics must never take the writer down
            log.exception("drop callback failed")
