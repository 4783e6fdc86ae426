"""The Monitor's status (pure): what one Monitor publishes every tick (its lag, what it has
consumed, its pace), and the view of several replicas' statuses that ``…/stats``, ``vigil
status`` and the console show.

On one machine there is one status and the view is that status, as it always was. With
several replicas (``log.backend: nats``) each Monitor keeps its own, named by its replica
id, and the view merges them the way an operator reads lag: the events waiting and the
records consumed add up, the lag in seconds is the worst, ``updated_at`` is the oldest last
tick; ``replicas`` lists each one's. A status older than ``stale_seconds`` behind the newest
(a replica stopped or gone, its partitions taken over) is listed but left out of the merge.

>>> view([{"replica": "a", "lag_events": 3, "lag_seconds": 1.0, "updated_at": 100.0},
...       {"replica": "b", "lag_events": 4, "lag_seconds": 2.5, "updated_at": 99.0}])["lag_events"]
7
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FIELDS = ("lag_events", "lag_seconds", "lag_bytes", "torn_tails", "consumed_total",
          "events_per_second", "updated_at")
ADDED = ("lag_events", "lag_bytes", "torn_tails", "consumed_total", "events_per_second")


@dataclass
class Status:
    lag_events: int = 0
    lag_bytes: int = 0
    lag_seconds: float = 0.0
    torn_tails: int = 0
    consumed_total: int = 0
    events_per_second: float | None = None
    updated_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def view(statuses: list[dict[str, Any]], stale_seconds: float = 60.0) -> dict[str, Any]:
    """The ``monitor`` part of ``…/stats``: one machine's status as it is (every field,
    None where never written); several replicas' merged, with ``replicas``."""
    if not any(s.get("replica") for s in statuses):
        one = statuses[0] if statuses else {}
        return {k: one.get(k) for k in FIELDS}
    replicas = sorted((s for s in statuses if s.get("replica")), key=lambda s: s["replica"])
    newest = max(s.get("updated_at") or 0.0 for s in replicas)
    live = [s for s in replicas if (s.get("updated_at") or 0.0) >= newest - stale_seconds]
    fresh = {id(s) for s in live}
    merged: dict[str, Any] = {k: _sum(live, k) for k in ADDED}
    merged["lag_seconds"] = max((s.get("lag_seconds") or 0.0 for s in live), default=None)
    merged["updated_at"] = min((s.get("updated_at") or 0.0 for s in live), default=None)
    merged["replicas"] = [{"replica": s["replica"], **{k: s.get(k) for k in FIELDS},
                           "stale": id(s) not in fresh} for s in replicas]
    return merged


def _sum(statuses: list[dict[str, Any]], key: str) -> Any:
    values = [s[key] for s in statuses if s.get(key) is not None]
    return sum(values) if values else None
