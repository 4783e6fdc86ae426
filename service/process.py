"""Process-wide tuning shared by the Gateway workers and the Monitor."""

from __future__ import annotations

import gc


def tune_gc() -> None:
    """Models, sessions and modules loaded at start live for the whole process: move them to
    the permanent generation (``gc.freeze``) so a full collection does not walk them, and
    let the young generation grow before collecting (requests and log records allocate a
    lot, briefly)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
