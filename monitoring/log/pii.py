"""Personal data kept out of the prediction log, applied as a record is rendered.

A card's input may say ``"pii": "drop"`` (never written) or ``"hash"`` (written as a keyed
HMAC-SHA256 of its value, so equal values still group and join; one key for every model, so
a customer id hashes the same in each). With ``hash_request_ids`` the request id (which a
client may choose with ``X-Request-ID``) is written the same way, in predictions and labels
alike, so labels still join. Without a key a hashed value is dropped: a value is never
written in clear because a key is missing.

>>> from models.card import Feature
>>> import numpy as np
>>> r = Redactor(b"k" * 32)
>>> card = (Feature("x", "float"), Feature("ssn", "category", categories=("a", "b"),
...         pii="hash"), Feature("name", "float", pii="drop"))
>>> rows = r.inputs(card, np.array([[1.0, 1.0, 7.0]]))
>>> rows[0]["x"], "name" in rows[0], rows[0]["ssn"] == r.hash("b")
(1.0, False, True)
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from models.card import Feature
from monitoring.log.writer import named_inputs

log = logging.getLogger("vigil.log")


class Redactor:
    """Drops and hashes what the card says, for one writer thread."""

    def __init__(self, key: bytes | None, hash_request_ids: bool = False) -> None:
        self._key = key
        self.hash_request_ids = hash_request_ids and key is not None
        self._plans: dict[int, tuple[Sequence[Feature], list[str], list[str]]] = {}
        self._warned = False

    def hash(self, value: Any) -> str:
        """The hex HMAC-SHA256 of a value's JSON (so ``1`` and ``"1"`` differ)."""
        assert self._key is not None
        return hmac.new(self._key, orjson.dumps(value), hashlib.sha256).hexdigest()

    def request_id(self, rid: str) -> str:
        return self.hash(rid) if self.hash_request_ids else rid

    def _plan(self, features: Sequence[Feature]) -> tuple[list[str], list[str]]:
        cached = self._plans.get(id(features))
        if cached is None or cached[0] is not features:
            if len(self._plans) > 256:
                self._plans.clear()
            drop = [f.name for f in features if f.pii == "drop"]
            hashed = [f.name for f in features if f.pii == "hash"]
            if hashed and self._key is None:
                if not self._warned:
                    log.warning("inputs marked pii: hash (%s) are dropped: log.hash_key is "
                                "not set", ", ".join(hashed))
                    self._warned = True
                drop, hashed = drop + hashed, []
            cached = self._plans[id(features)] = (features, drop, hashed)
        return cached[1], cached[2]

    def needed(self, features: Sequence[Feature]) -> bool:
        drop, hashed = self._plan(features)
        return bool(drop or hashed)

    def inputs(self, features: Sequence[Feature], matrix: np.ndarray) -> list[dict[str, Any]]:
        """``named_inputs`` with the card's personal data dropped or hashed."""
        rows = named_inputs(features, matrix)
        self.redact(features, rows)
        return rows

    def redact(self, features: Sequence[Feature], rows: list[dict[str, Any]]) -> None:
        """Drop and hash in place."""
        drop, hashed = self._plan(features)
        if not drop and not hashed:
            return
        for row in rows:
            for name in drop:
                row.pop(name, None)
            for name in hashed:
                if name in row and row[name] is not None:
                    row[name] = self.hash(row[name])
