"""Shadow traffic, run by the Monitor on the logged records of the requests routed to it.

The Gateway worker only decides which shadows see a request (``route``, sampled at each
shadow's rate) and writes their names in the request's log record. The Monitor reads that
record, and ``ShadowMirror`` queues the named shadows on their lanes (``monitoring.shadows.lanes``)
with the logged inputs, a tick's records at once. Run in the workers, a shadow took the
champion's CPU on the cores that serve it: +21-57% on its p50 at a fixed rate, 0.75-0.81x its
req/s at saturation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from models.inputs import decode_records
from monitoring.shadows.lanes import ShadowJob, ShadowPool

log = logging.getLogger("vigil.shadows")


class Unloadable:
    """Stands in for a shadow version that cannot be loaded: each call fails with why, so
    its jobs are recorded as errors and its breaker opens like any failing shadow's."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def predict(self, matrix: np.ndarray) -> list[dict[str, Any]]:
        raise RuntimeError(self.reason)


class ShadowMirror:
    """Runs, in the Monitor, the shadows each logged request names (``data["shadows"]``).

    Called with the prediction records of a committed step: for each (model, shadow version)
    it decodes the requests' logged inputs with the shadow's card and queues one job per
    request on the version's lane, which runs what is queued as one call and logs each answer
    (variant ``shadow``, the same request id) for the next tick to read. A slow or broken
    shadow times out or fails in its own lane; the call waits only for room in a full lane,
    while the lane works (back-pressure), at most the shadow's timeout once it hangs.

    ``runtime_of(model, version)`` loads a version (versions are immutable: cached here,
    dropped after ``keep_seconds`` unused). ``unwritten()`` counts the answers the sink has
    taken but not yet written where the Monitor reads them.
    """

    def __init__(self, pool: ShadowPool, runtime_of: Callable[[str, str], Any], *,
                 unwritten: Callable[[], int] = lambda: 0, keep_seconds: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pool = pool
        self._runtime_of = runtime_of
        self._unwritten = unwritten
        self._keep = keep_seconds
        self._clock = clock
        self._runtimes: dict[tuple[str, str], tuple[Any, float]] = {}
        self._undecodable: set[tuple[str, str]] = set()  # shadows warned about

    def pending(self) -> int:
        """Shadow answers owed: queued or running in a lane, or not yet written to the log.
        The Monitor counts them in its lag, so a lag of 0 means every answer was read."""
        return self.pool.pending() + self._unwritten()

    def runtime(self, model: str, version: str) -> Any:
        now = self._clock()
        key = (model, version)
        cached = self._runtimes.get(key)
        if cached is None:
            try:
                runtime: Any = self._runtime_of(model, version)
            except Exception as exc:  # deleted, or broken since it was named
                log.warning("shadow %s:%s cannot be loaded: %s", model, version, exc)
                runtime = Unloadable(f"{type(exc).__name__}: {exc}"[:500])
        else:
            runtime = cached[0]
        self._runtimes[key] = (runtime, now)
        for k, (_, used) in list(self._runtimes.items()):
            if now - used > self._keep:
                del self._runtimes[k]
        return runtime

    def __call__(self, records: list[dict[str, Any]]) -> int:
        """Queue the shadows of these records' requests; returns the jobs queued."""
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for data in records:
            if data.get("status") != "ok" or not data.get("outputs"):
                continue
            for version in data.get("shadows") or ():
                if version != data.get("version"):
                    groups.setdefault((data["model"], version), []).append(data)
        queued = 0
        # a full lane is waited on while it makes progress (back-pressure on the tick); a
        # hung one holds the tick up to its timeout, then its jobs are dropped until its
        # watchdog and breaker take it out
        for (model, version), items in groups.items():
            runtime = self.runtime(model, version)
            card = getattr(runtime, "card", None)
            for data, matrix in zip(items, self._matrices(card, items, (model, version)),
                                    strict=True):
                if matrix is None:
                    continue
                job = ShadowJob(str(data["request_id"]), model, version, runtime, matrix,
                                str(data["version"]), data["outputs"],
                                card.features if card is not None else None,
                                logged=data["inputs"])
                if self.pool.submit(job, wait=True) is None:
                    queued += 1
        return queued

    def _matrices(self, card: Any, items: list[dict[str, Any]],
                  shadow: tuple[str, str]) -> list[np.ndarray | None]:
        """Each request's logged inputs as the shadow's input matrix: all of them decoded at
        once, one by one when that fails (a request whose inputs no longer decode is
        skipped, logged once a shadow version). Inputs the card marks ``pii: hash`` or
        ``drop`` were logged as a hash or not at all: the shadow sees them as null, so it
        runs only if its card lets them be null (docs/security.md)."""
        if card is None:  # an unloadable version: any matrix fails its call
            return [np.zeros((len(d.get("inputs") or ()), 0)) for d in items]
        redacted = {f.name for f in card.features if getattr(f, "pii", "keep") != "keep"}
        if redacted:
            items = [{**d, "inputs": [{k: None if k in redacted else v for k, v in r.items()}
                                      for r in d.get("inputs") or ()]} for d in items]
        try:
            every = decode_records(card, [r for d in items for r in d["inputs"]])
        except Exception:  # noqa: S110 — decoded one by one below, which names the request
            pass
        else:
            out: list[np.ndarray | None] = []
            at = 0
            for d in items:
                n = len(d["inputs"])
                out.append(every[at:at + n])
                at += n
            return out
        matrices: list[np.ndarray | None] = []
        for d in items:
            try:
                matrices.append(decode_records(card, d.get("inputs")))
            except Exception as exc:
                if shadow not in self._undecodable:  # once a shadow version, not a request
                    self._undecodable.add(shadow)
                    log.warning("shadow %s:%s skips requests whose logged inputs do not decode "
                                "(first: %s): %s", *shadow, d.get("request_id"), exc)
                matrices.append(None)
        return matrices
