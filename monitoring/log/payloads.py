"""A prediction-log record as a NATS message payload, sealed or clear.

With ``log.encryption.key`` the publisher seals each record into one frame of the segment
format (``monitoring.log.frames``: magic ``VGE1``, key id, a nonce of a per-writer random
prefix and a counter, the AES-256-GCM ciphertext) and marks the message with the header
``Vigil-Encoding: VGE1``, so a consumer outside Vigil can tell a sealed payload from a
CloudEvents JSON one. ``Nats-Msg-Id`` stays the event id (a UUIDv7: not secret).

Readers (the Monitor, the export) open a sealed payload with the key or any previous key. A
payload that fails authentication is counted, named (stream, sequence, key id) and skipped,
never parsed; one sealed by a key that is not configured raises ``LogKeyError``: the reader
stops there rather than skip records it could read with the right configuration. A clear
payload (written before encryption was turned on) is read as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from monitoring.log.frames import (
    HEADER,
    MAGIC,
    TAG_BYTES,
    Frame,
    LogKeyError,
    LogKeys,
    Opener,
    Sealer,
)
from monitoring.log.jetstream import MSG_ID

log = logging.getLogger("vigil.log")

ENCODING = "Vigil-Encoding"
SEALED = MAGIC.decode()


class PayloadSealer:
    """Seals payloads with the active key (clear without one), for one publishing thread."""

    def __init__(self, keys: LogKeys | None) -> None:
        self._sealer = Sealer(keys.active) if keys is not None and keys.active else None

    @property
    def sealing(self) -> bool:
        return self._sealer is not None

    def seal(self, record: bytes) -> bytes:
        return self._sealer.seal(record) if self._sealer is not None else record

    def headers(self, msg_id: str) -> dict[str, str]:
        headers = {MSG_ID: msg_id}
        if self._sealer is not None:
            headers[ENCODING] = SEALED
        return headers


def is_sealed(data: bytes, headers: Mapping[str, str] | None) -> bool:
    """Sealed by its header, or by its first bytes (a header stripped on the way)."""
    return bool(headers and headers.get(ENCODING) == SEALED) or data[:4] == MAGIC


def one_frame(data: bytes) -> Frame | None:
    """``data`` as exactly one whole frame, or None when it is not one."""
    if len(data) < HEADER.size + TAG_BYTES:
        return None
    magic, kid, nonce, length = HEADER.unpack_from(data, 0)
    if magic != MAGIC or HEADER.size + length != len(data):
        return None
    return Frame(0, len(data), kid, nonce, data[:HEADER.size], data[HEADER.size:])


class PayloadOpener:
    """Opens the payloads of one stream with every configured key (the module docstring);
    ``on_bad(sequence)`` is called for each one skipped, ``bad_frames`` counts them."""

    def __init__(self, keys: LogKeys | None, stream: str,
                 on_bad: Callable[[int], None] | None = None) -> None:
        self.keys = keys
        self.stream = stream
        self._opener = Opener(keys)
        self._on_bad = on_bad
        self.bad_frames = 0

    def open(self, data: bytes, headers: Mapping[str, str] | None, seq: int) -> bytes | None:
        """The record, or None for a payload skipped (counted and logged)."""
        if not is_sealed(data, headers):
            return data
        frame = one_frame(data)
        if frame is None:
            self._bad(seq, None, "is not one whole frame")
            return None
        self.check(frame.key_id, seq)
        record = self._opener.open(frame)
        if record is None:
            self._bad(seq, frame.key_id, "failed authentication")
        return record

    def peek(self, data: bytes, headers: Mapping[str, str] | None) -> bytes | None:
        """The record if it opens, else None; nothing counted (for a gauge)."""
        if not is_sealed(data, headers):
            return data
        frame = one_frame(data)
        return self._opener.open(frame) if frame is not None else None

    def check(self, kid: bytes, seq: int) -> None:
        """Raise ``LogKeyError`` when ``kid`` is no configured key."""
        if self._opener.known(kid):
            return
        where = f"stream {self.stream} sequence {seq}"
        if self.keys is None:
            raise LogKeyError("log.encryption.key", f"{where} is encrypted (key id "
                              f"{kid.hex()}) and no key is configured")
        raise LogKeyError("log.encryption.key", (
            f"{where} was sealed by key id {kid.hex()}, which is neither the key nor one of "
            "log.encryption.previous_keys (a wrong key, or a rotated one missing from "
            "previous_keys)"))

    def _bad(self, seq: int, kid: bytes | None, why: str) -> None:
        self.bad_frames += 1
        log.error("prediction log stream %s: the message at sequence %d%s %s; skipped, "
                  "never parsed", self.stream, seq,
                  f" (key id {kid.hex()})" if kid is not None else "", why)
        if self._on_bad is not None:
            try:
                self._on_bad(seq)
            except Exception:  # a metric must never stop the reader
                log.exception("bad-frame callback failed")
