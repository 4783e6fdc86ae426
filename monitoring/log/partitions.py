"""Where a record goes on a partitioned log (pure): the partition of a model, the subject of a
partition, and the event id and model of a rendered record, read without parsing it.

A model's predictions, shadow answers and feedback all carry ``source`` ``/vigil/{model}/...``,
so they land in one partition, in the order they were published.

>>> partition_of("breast_cancer", 8) == partition_of("breast_cancer", 8)
True
>>> subject("VIGIL", 3)
'VIGIL.events.3'
>>> route_of(b'{"specversion":"1.0","id":"0193","source":"/vigil/iris/champion","type":"t"}')
('0193', 'iris')
"""

from __future__ import annotations

import hashlib

_ID = b'"id":"'
_SOURCE = b'"source":"/vigil/'


def partition_of(model: str, partitions: int) -> int:
    """A stable hash of the model's name: the same in every process, replica and release."""
    digest = hashlib.sha256(model.encode()).digest()
    return int.from_bytes(digest[:8], "big") % partitions


def subject(stream: str, partition: int) -> str:
    return f"{stream}.events.{partition}"


def route_of(line: bytes) -> tuple[str, str]:
    """The event id and the model of one rendered CloudEvents record. The writer renders
    ``specversion``, ``id`` and ``source`` first (orjson keeps the order), so this looks at
    the head of the line only; raises ValueError for a line that is not such a record."""
    at = line.find(_ID, 0, 128)
    if at < 0:
        raise ValueError("a log record without an id")
    at += len(_ID)
    event_id = line[at:line.index(b'"', at)].decode()
    src = line.find(_SOURCE, at)
    if src < 0:
        raise ValueError("a log record without a /vigil/ source")
    src += len(_SOURCE)
    return event_id, line[src:line.index(b"/", src)].decode()
