"""Run the retraining policies in the Monitor: gather each model's facts, let the pure policy
decide, and write the events to the outbox in the same transaction as the policy state."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from monitoring.quality.label_join import Key
from monitoring.quality.stats import VersionStats
from monitoring.retrain.policy import Observation, Policy, evaluate, event
from monitoring.retrain.webhooks import Target, enqueue
from store import DriftStore, Engine, PolicyStateStore, transaction

log = logging.getLogger("vigil.triggers")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Triggers:
    def __init__(self, engine: Engine, policies: dict[str, Policy], targets: list[Target],
                 champion_of: Callable[[str], tuple[str, float, dict[str, Any]] | None],
                 base_url: str) -> None:
        """``champion_of(model)`` -> (champion version, its creation time, its lineage)."""
        self.engine = engine
        self.policies = policies
        self.targets = targets
        self.champion_of = champion_of
        self.base_url = base_url
        self.state = PolicyStateStore()
        self.drift = DriftStore(engine)
        self.fired: list[str] = []  # event ids written by this process (for tests and logs)
        # several replicas (log.backend: nats): a model's policy fires only at the owner of
        # its partition (monitoring.cluster.PartitionOwner.owns)
        self.owns: Callable[[str], bool] | None = None

    def evaluate(self, stats: Mapping[Key, VersionStats], now: float) -> list[str]:
        """Each policy's firings at ``now``, written to the outbox; ``stats`` are the
        versions' statistics as the Monitor's last step committed them."""
        written: list[str] = []
        for model, policy in self.policies.items():
            if self.owns is not None and not self.owns(model):
                continue
            try:
                champ = self.champion_of(model)
            except Exception:
                log.exception("no champion for %s; its policy waits", model)
                continue
            if champ is None:
                continue
            version, created_at, lineage = champ
            with transaction(self.engine) as tx:
                state = self.state.get(tx)
                alarms = self.drift.open_alarms(tx, model, version)
                champion = stats.get((model, version, "champion"))
                quality = champion.quality.windowed() if champion is not None else {}
                obs = Observation(model, now, version, created_at, alarms, quality)
                model_state = state.setdefault(model, {})
                firings = evaluate(policy, obs, model_state)
                for f in firings:
                    ev = event(f, model, version, lineage, self.base_url, iso(now))
                    if enqueue(tx, ev, f.event_id, self.targets, now, model, f.reason):
                        written.append(f.event_id)
                        log.info("retraining trigger %s (%s)", f.event_id, f.reason)
                self.state.put(tx, state, now)
        self.fired += written
        return written
