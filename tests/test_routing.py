from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from models.deployment import Canary, Deployment, Shadow
from service.routing import bucket, route

keys = st.text(min_size=1, max_size=64)
weights = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def deployment(weight: float, salt: str = "salt", shadows: tuple[Shadow, ...] = ()) -> Deployment:
    return Deployment(model="m", champion="v1", canary=Canary("v2", weight), shadows=shadows,
                      salt=salt, revision=1)


@given(keys, weights)
def test_a_key_always_gets_the_same_variant(key: str, weight: float) -> None:
    d = deployment(weight)
    first = route(d, key)
    assert all(route(d, key) == first for _ in range(5))


@given(keys, weights, weights)
def test_raising_the_weight_only_moves_keys_from_champion_to_canary(
        key: str, w1: float, w2: float) -> None:
    low, high = sorted((w1, w2))
    before = route(deployment(low), key)
    after = route(deployment(high), key)
    assert before is not None and after is not None
    if before.variant == "canary":
        assert after.variant == "canary"


@given(st.sampled_from([0.05, 0.1, 0.2, 0.5, 0.9]), st.text(min_size=1, max_size=8))
def test_observed_canary_share_is_within_003_of_the_weight(weight: float, salt: str) -> None:
    d = deployment(weight, salt=salt)
    share = sum(route(d, f"user-{i}").variant == "canary" for i in range(10_000)) / 10_000
    assert abs(share - weight) <= 0.03


def test_bucket_is_stable_across_releases() -> None:
    # Pinned values: if the hash or its encoding changes, every user moves variant on upgrade.
    assert [bucket("abc", f"k{i}") for i in range(3)] == [8019, 1994, 8704]
    assert bucket("salt", "u-42") == 4065


def test_weight_zero_and_one_are_absolute() -> None:
    assert all(route(deployment(0.0), f"k{i}").variant == "champion" for i in range(500))
    assert all(route(deployment(1.0), f"k{i}").variant == "canary" for i in range(500))


def test_without_a_key_the_split_is_random_at_the_weight() -> None:
    rng = random.Random(7)
    d = deployment(0.3)
    share = sum(route(d, None, rand=rng.random).variant == "canary"
                for _ in range(10_000)) / 10_000
    assert abs(share - 0.3) < 0.03


def test_explicit_version_bypasses_the_split_and_unknown_is_none() -> None:
    d = deployment(0.5, shadows=(Shadow("v3", 1.0),))
    r = route(d, "k", override="v3")
    assert r is not None and (r.version, r.variant, r.shadows) == ("v3", "explicit", ())
    assert route(d, "k", override="v7") is None


def test_shadows_are_sampled_at_their_rate() -> None:
    rng = random.Random(3)
    d = deployment(0.0, shadows=(Shadow("v3", 0.25), Shadow("v4", 1.0)))
    routes = [route(d, None, rand=rng.random) for _ in range(4000)]
    assert all("v4" in r.shadows for r in routes)
    share = sum("v3" in r.shadows for r in routes) / len(routes)
    assert abs(share - 0.25) < 0.03
