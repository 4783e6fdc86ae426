"""Pure routing: ``route(deployment, key, override) -> Route``.

With a routing key the split is deterministic and sticky::

    bucket = int.from_bytes(sha256(salt + "\\x00" + key)[:8], "big") % 10_000
    canary  iff  bucket < round(weight * 10_000)

so every process and release agrees, one key stays on one variant, and raising the weight
only moves keys from champion to canary. Without a key the split is random (``rand``).
A running experiment's arms take over the split: the same bucket falls in the arm whose
cumulative share passes it (variant ``experiment``); the champion stays the fallback.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from models.deployment import Deployment

BUCKETS = 10_000
CHAMPION, CANARY, SHADOW, EXPLICIT = "champion", "canary", "shadow", "explicit"
EXPERIMENT = "experiment"
VARIANTS = (CHAMPION, CANARY, SHADOW, EXPLICIT, EXPERIMENT)


@dataclass(frozen=True)
class Route:
    version: str
    variant: str
    shadows: tuple[str, ...] = ()


def bucket(salt: str, key: str) -> int:
    """The key's bucket in [0, 10 000), stable across processes and releases.

    >>> bucket("s", "u-42") == bucket("s", "u-42")
    True
    """
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def route(deployment: Deployment, key: str | None = None, override: str | None = None,
          rand: Callable[[], float] = random.random) -> Route | None:
    """Which version answers, as which variant, and which shadows see the input.

    Returns None when ``override`` names a version the deployment does not hold.
    """
    shadows = tuple(s.version for s in deployment.shadows
                    if s.sample_rate >= 1.0 or rand() < s.sample_rate)
    if override is not None:
        if override not in deployment.versions():
            return None
        return Route(override, EXPLICIT, ())
    if deployment.arms:
        point = bucket(deployment.salt, key) if key else rand() * BUCKETS
        edge = 0.0
        for arm in deployment.arms:
            edge += arm.share
            if point < round(edge * BUCKETS):
                return Route(arm.version, EXPERIMENT, shadows)
        return Route(deployment.champion, CHAMPION, shadows)
    canary = deployment.canary
    if canary is not None and canary.weight > 0:
        threshold = round(canary.weight * BUCKETS)
        hit = (bucket(deployment.salt, key) < threshold if key
               else rand() * BUCKETS < threshold)
        if hit:
            return Route(canary.version, CANARY, shadows)
    return Route(deployment.champion, CHAMPION, shadows)
