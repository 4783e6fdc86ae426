"""The prediction log encrypted at rest: one authenticated AES-256-GCM frame per record.

A frame replaces a clear line; its 24-byte header is authenticated with the record::

    magic   4 bytes  b"VGE1"
    key id  4 bytes  the first 4 bytes of SHA-256 of the key (which key sealed it)
    nonce  12 bytes  8 random bytes per writer + a 4-byte counter: never repeated under a key
    length  4 bytes  big-endian, the ciphertext's length (the record + a 16-byte tag)
    ciphertext

A segment holds frames only or lines only, so readers tell them apart by its first byte
(``{`` for a line). The length makes a torn last frame visible as a torn last line is: a
frame is consumed only once all its bytes are on disk. A frame that fails authentication is
counted, named (segment and offset) and skipped, never parsed; a header whose length cannot be
trusted is skipped by finding the next magic.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"VGE1"
HEADER = struct.Struct(">4s4s12sI")
TAG_BYTES = 16
MAX_FRAME = 64 * 1024 * 1024  # a longer length field is corruption, not a record


class LogKeyError(Exception):
    """The log's keys are unusable: a key that is not 32 bytes of base64, or a segment sealed
    by a key that is not configured (names the segment and the key id)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def parse_key(text: str, field: str = "log.encryption.key") -> bytes:
    """A key as configured: 32 random bytes in standard base64 (``openssl rand -base64 32``,
    ``python -c 'import os,base64; print(base64.b64encode(os.urandom(32)).decode())'``)."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise LogKeyError(field, "not standard base64") from None
    if len(key) != 32:
        raise LogKeyError(field, f"{len(key)} bytes; AES-256 needs exactly 32")
    return key


def key_id(key: bytes) -> bytes:
    """What a frame names its key by: 4 bytes of SHA-256, so no key is ever written down."""
    return hashlib.sha256(b"vigil-log-key\x00" + key).digest()[:4]


@dataclass(frozen=True)
class LogKeys:
    """The active key (seals new frames; None: new segments are clear lines) and every key
    that may open old ones."""

    active: bytes | None
    previous: tuple[bytes, ...] = ()

    @classmethod
    def from_config(cls, key: str | None, previous: Iterable[str] = ()) -> LogKeys | None:
        """None when no key at all is configured (a clear log)."""
        old = tuple(parse_key(p, f"log.encryption.previous_keys[{i}]")
                    for i, p in enumerate(previous))
        if not key and not old:
            return None
        return cls(parse_key(key) if key else None, old)

    def ids(self) -> dict[bytes, bytes]:
        keys = (*self.previous, self.active) if self.active else self.previous
        return {key_id(k): k for k in keys}


class Sealer:
    """Seals records with the active key, for one writer thread (its nonce counter is not
    shared). About 2.5 µs for a 400-byte record on this machine (docs/security.md)."""

    def __init__(self, active: bytes) -> None:
        self._aead = AESGCM(active)
        self._kid = key_id(active)
        self._prefix = os.urandom(8)
        self._counter = 0

    def seal(self, record: bytes) -> bytes:
        if self._counter >= 0xFFFFFFFF:  # 2^32 frames: a new random half, a new counter
            self._prefix, self._counter = os.urandom(8), 0
        self._counter += 1
        nonce = self._prefix + self._counter.to_bytes(4, "big")
        header = HEADER.pack(MAGIC, self._kid, nonce, len(record) + TAG_BYTES)
        return header + self._aead.encrypt(nonce, record, header)


def is_framed(first: bytes) -> bool:
    """A segment of frames (not lines), by its first bytes."""
    return first[:1] == MAGIC[:1]


@dataclass(frozen=True)
class Frame:
    offset: int  # where the frame starts, from the start of the data given
    end: int  # where it ends (the next frame's offset)
    key_id: bytes
    nonce: bytes
    header: bytes
    body: bytes


def split(data: bytes, final: bool = False) -> tuple[list[Frame], int, list[int]]:
    """The complete frames in ``data`` (which starts at a frame), the bytes they take, and
    the offsets of bytes that are no frame (skipped to the next magic).

    A frame running past the end is a torn tail, left for later; unless ``final`` (a closed
    segment, or a dead writer's last bytes): then its length field is corrupt and it is
    skipped like any other garbage."""
    frames: list[Frame] = []
    skipped: list[int] = []
    pos, n = 0, len(data)
    while pos + HEADER.size <= n:
        magic, kid, nonce, length = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + length
        if magic == MAGIC and TAG_BYTES <= length <= MAX_FRAME and end <= n:
            frames.append(Frame(pos, end, kid, nonce, data[pos:pos + HEADER.size],
                                data[pos + HEADER.size:end]))
            pos = end
            continue
        if magic == MAGIC and TAG_BYTES <= length <= MAX_FRAME and not final:
            break  # torn, or still being written: not consumed
        skipped.append(pos)
        nxt = data.find(MAGIC, pos + 1)
        if nxt < 0:
            pos = n if final else max(pos + 1, n - len(MAGIC) + 1)
            break
        pos = nxt
    if final and 0 < n - pos < HEADER.size:  # a stub too short for a header
        skipped.append(pos)
        pos = n
    return frames, pos, skipped


class Opener:
    """Opens frames with every configured key. ``open`` gives None for a frame that fails
    authentication or names a key that is not configured: counted by the caller, never
    parsed."""

    def __init__(self, keys: LogKeys | None) -> None:
        self._aeads = {kid: AESGCM(k) for kid, k in (keys.ids() if keys else {}).items()}

    def known(self, kid: bytes) -> bool:
        return kid in self._aeads

    def open(self, frame: Frame) -> bytes | None:
        aead = self._aeads.get(frame.key_id)
        if aead is None:
            return None
        try:
            return aead.decrypt(frame.nonce, frame.body, frame.header)
        except InvalidTag:
            return None


def first_key_id(data: bytes) -> bytes | None:
    """The key id of a segment's first frame (None for a segment of lines, or empty)."""
    if len(data) < HEADER.size or not is_framed(data):
        return None
    magic, kid, _, _ = HEADER.unpack_from(data, 0)
    return kid if magic == MAGIC else None
