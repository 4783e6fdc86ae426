"""The hand-written DDSketch (``monitoring.quality.stats.Sketch``) against the ``ddsketch``
package behind the same interface and JSON form: add, merge, quantile, a JSON round trip (what
the Monitor's checkpoints and the rollout snapshots do) and ``VersionStats.add_prediction``.

    python -m load_tests.sketch_bench     (``ddsketch`` is a dev extra, for this bench only)

Thread CPU time, best of many repeats, so other jobs on the machine count for less. The
result decides which one the Monitor uses (see ``monitoring/quality/stats.py``).
"""

from __future__ import annotations

import math
import random
import time
import timeit
from collections.abc import Callable
from typing import Any

import orjson
from ddsketch import DDSketch
from ddsketch.store import DenseStore

from monitoring.quality.stats import Sketch, VersionStats


class LibrarySketch:
    """Quantiles with 1% relative error in constant memory, mergeable, JSON-able: the
    ``ddsketch`` package's DDSketch (Masson, Rim & Lee, VLDB 2019) behind the interface the
    Monitor and the rollout analysis use (what ``monitoring.quality.stats.Sketch`` would be).

    What this class adds to the library: NaN is ignored (the library would count it as a
    zero); a quantile is clamped to [min, max], so one value reads back exactly; and a JSON
    form (the library has none without its protobuf extra), the same as the hand-written
    sketch this replaced wrote, so checkpoints from before load unchanged: ``pos`` and
    ``neg`` map a bin's key (a string) to its count, key ``k`` holding the values in
    ``(gamma ** (k - 1), gamma ** k]``, ``gamma = 1.01 / 0.99``.
    """

    ALPHA = 0.01

    __slots__ = ("_dd",)

    def __init__(self) -> None:
        self._dd = DDSketch(self.ALPHA)

    def add(self, x: float) -> None:
        if x == x:  # NaN is not a value
            self._dd.add(x)

    @property
    def n(self) -> int:
        return int(self._dd.count)

    @property
    def min(self) -> float:
        return float(self._dd._min)  # the library keeps min and max, with no public getter

    @property
    def max(self) -> float:
        return float(self._dd._max)

    @property
    def pos(self) -> dict[int, int]:
        """The positive values' bins that hold any: key → count."""
        return _bins(self._dd._store)

    @property
    def neg(self) -> dict[int, int]:
        """The negative values' bins (by the key of the absolute value): key → count."""
        return _bins(self._dd._negative_store)

    def merge(self, other: LibrarySketch) -> None:
        self._dd.merge(other._dd)

    def quantile(self, q: float) -> float | None:
        value = self._dd.get_quantile_value(q)
        if value is None:
            return None
        return min(max(float(value), self.min), self.max)

    def to_dict(self) -> dict[str, Any]:
        dd = self._dd
        return {"pos": {str(k): v for k, v in _bins(dd._store).items()},
                "neg": {str(k): v for k, v in _bins(dd._negative_store).items()},
                "zero": int(dd._zero_count), "n": self.n,
                "min": None if dd.count == 0 else dd._min,
                "max": None if dd.count == 0 else dd._max}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LibrarySketch:
        s = cls()
        dd = s._dd
        _fill(dd._store, d["pos"])
        _fill(dd._negative_store, d["neg"])
        dd._zero_count = float(d["zero"])
        dd._count = float(d["n"])
        dd._min = math.inf if d["min"] is None else d["min"]
        dd._max = -math.inf if d["max"] is None else d["max"]
        return s

    @classmethod
    def difference(cls, now: dict[str, Any], base: dict[str, Any]) -> LibrarySketch:
        """The values added between two snapshots (``to_dict``) of one sketch; min and max
        stay the later snapshot's (a bound, not the window's own)."""
        diff = dict(now, zero=now["zero"] - base["zero"], n=now["n"] - base["n"])
        for side in ("pos", "neg"):
            bins = {int(k): v for k, v in now[side].items()}
            for k, v in base[side].items():
                bins[int(k)] = bins.get(int(k), 0) - v
            diff[side] = {str(k): v for k, v in bins.items() if v > 0}
        return cls.from_dict(diff)


def _bins(store: DenseStore) -> dict[int, int]:
    offset = store.offset
    return {i + offset: int(c) for i, c in enumerate(store.bins) if c}


def _fill(store: DenseStore, bins: dict[str, int]) -> None:
    keys = sorted((int(k), c) for k, c in bins.items() if c > 0)
    if not keys:
        return
    # the extremes first: the dense store grows its range twice, not once a key
    store.add(keys[0][0], float(keys[0][1]))
    for k, c in keys[:0:-1]:
        store.add(k, float(c))


def _best(fn: Callable[[], Any], per: int, repeat: int = 15) -> float:
    return min(timeit.repeat(fn, number=1, repeat=repeat, timer=time.thread_time)) / per * 1e6


def _filled(cls: Any, values: list[float]) -> Any:
    s = cls()
    for v in values:
        s.add(v)
    return s


def _hand_merge(a: Sketch, b: Sketch) -> None:
    """The hand-written sketch has no merge (nothing merges today): the obvious one."""
    for mine, theirs in ((a.pos, b.pos), (a.neg, b.neg)):
        for k, v in theirs.items():
            mine[k] = mine.get(k, 0) + v
    a.zero, a.n = a.zero + b.zero, a.n + b.n
    a.min, a.max = min(a.min, b.min), max(a.max, b.max)


def measure(cls: Any, latencies: list[float], big: list[float]) -> dict[str, float]:
    def add() -> None:
        s = cls()
        for v in latencies:
            s.add(v)

    other = _filled(cls, latencies[:10_000])
    small = [_filled(cls, latencies[10_000:10_100]) for _ in range(200)]

    def merge() -> None:
        for s in small:
            _hand_merge(s, other) if cls is Sketch else s.merge(other)

    full = _filled(cls, big)
    record = {"rows": 1, "status": "ok", "latency_seconds": 0.0042, "outputs": [{"value": 1.5}]}

    def per_record() -> None:
        vs = VersionStats(None, 100)
        vs.latency, vs.values = cls(), cls()
        for i in range(5000):
            vs.add_prediction(record, 1e9 + i)

    regressor = _best(per_record, 5000)
    return {
        "add": _best(add, len(latencies)),
        "merge (10k values into 100)": min(timeit.repeat(merge, number=1, repeat=9,
                                                         timer=time.thread_time)) / 200 * 1e6,
        "quantile (100k values)": _best(lambda: [full.quantile(q) for q in (.5, .95, .99)], 3,
                                        50),
        "JSON round trip (100k values)": _best(lambda: cls.from_dict(orjson.loads(orjson.dumps(
            full.to_dict()))), 1, 50),
        "add_prediction, a regressor (2 adds)": regressor,
    }


def main() -> None:
    rnd = random.Random(1)
    latencies = [rnd.lognormvariate(math.log(0.005), 0.8) for _ in range(20_000)]
    big = [rnd.lognormvariate(math.log(0.005), 0.8) for _ in range(100_000)]
    # the same answers: quantiles agree within the 1% both promise, and the library reads
    # the hand-written sketch's JSON
    hand, lib = _filled(Sketch, big), _filled(LibrarySketch, big)
    back = LibrarySketch.from_dict(orjson.loads(orjson.dumps(hand.to_dict())))
    for q in (0.5, 0.95, 0.99):
        h, x, y = hand.quantile(q), lib.quantile(q), back.quantile(q)
        assert h and x and y and abs(h - x) <= 0.0201 * h and abs(h - y) <= 0.0201 * h, q
    rounds = [(measure(Sketch, latencies, big), measure(LibrarySketch, latencies, big))
              for _ in range(3)]
    print(f"{'µs (thread CPU time, best of 3 rounds)':40s} {'hand':>9s} {'ddsketch':>9s}")
    for key in rounds[0][0]:
        h = min(r[0][key] for r in rounds)
        x = min(r[1][key] for r in rounds)
        print(f"{key:40s} {h:9.3f} {x:9.3f}  ({x / h:.2f}x)")


if __name__ == "__main__":
    main()
