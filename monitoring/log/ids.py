"""Identifiers for requests and log records: UUID version 7 (RFC 9562), 32 hex characters.

Time-ordered: the first 48 bits are the Unix time in milliseconds, the other 74 (after the
version and variant bits) random. The Monitor indexes every answer by its request id for the
label join, and random ids (version 4, before 2026-11-29) landed all over that B-tree: a
500-row step dirtied a page a row, and inserting cost 17 µs a row into an empty SQLite index,
29 at 50k rows, 42 at 200k and 47 at 1M (CPU, pinned). Version 7 ids append at the index's
end: 6–12 µs a row at any size. Ids a client sends (``X-Request-ID``) are kept as they are.

The random bits come from ``os.urandom`` 4 KiB at a time: ``uuid.uuid4().hex`` made one
``getrandom`` call and built a ``UUID`` object per id, ~4 µs each and three per request with
a shadow. The bytes are the same CSPRNG's; only the system call and the object are
amortised."""

from __future__ import annotations

import os
import threading
import time

_CHUNK = 4096
_RANDOM = 10  # bytes an id: 12 bits of rand_a and 62 of rand_b, after the version/variant
_local = threading.local()


def new_id() -> str:
    """A UUID version 7 as ``uuid.UUID.hex`` formats it."""
    buf: bytes | None = getattr(_local, "buf", None)
    at: int = getattr(_local, "at", _CHUNK)
    if buf is None or at + _RANDOM > _CHUNK or os.getpid() != getattr(_local, "pid", None):
        buf, at = os.urandom(_CHUNK), 0  # a forked child must not repeat its parent's ids
        _local.buf, _local.pid = buf, os.getpid()
    _local.at = at + _RANDOM
    b = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big"))
    b += buf[at:at + _RANDOM]
    b[6] = (b[6] & 0x0F) | 0x70  # version 7
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 9562 variant
    return b.hex()
