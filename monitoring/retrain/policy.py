"""Retraining trigger policy (pure): plain observations in, firings out.

Reasons: ``drift`` (an open alarm of a chosen signal), ``quality`` (a live metric past its
threshold on enough labels), ``schedule`` (every N days since the champion was created or the
last retraining trigger) and ``manual`` (an operator). A condition must hold for
``hold_seconds`` before it fires; a cooldown per model and reason stops repeats. Every firing has
a stable event id — the outbox's deduplication key — so evaluating the same facts twice (after a
crash) can never send two different events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

LOWER_IS_WORSE = {"accuracy", "precision", "recall", "f1", "roc_auc", "r2"}


@dataclass(frozen=True)
class Policy:
    model: str
    drift_signals: tuple[str, ...] = ()
    quality_metric: str | None = None
    quality_threshold: float | None = None  # fires below (accuracy…) or above (log_loss, mae…)
    min_labels: int = 200
    schedule_days: float | None = None
    hold_seconds: float = 0.0
    cooldown_seconds: float = 86_400.0


@dataclass
class Observation:
    """What the Monitor knows about a model at one tick."""

    model: str
    now: float
    champion: str
    champion_created_at: float
    alarms: list[dict[str, Any]] = field(default_factory=list)  # open: id, signal, features…
    quality: dict[str, Any] = field(default_factory=dict)  # champion's window metrics + labels


@dataclass(frozen=True)
class Firing:
    event_id: str
    reason: str
    evidence: dict[str, Any]


def _breached(policy: Policy, quality: dict[str, Any]) -> bool:
    metric, threshold = policy.quality_metric, policy.quality_threshold
    if metric is None or threshold is None:
        return False
    value = quality.get(metric)
    if value is None or quality.get("labels", 0) < policy.min_labels:
        return False
    return value < threshold if metric in LOWER_IS_WORSE else value > threshold


def evaluate(policy: Policy, obs: Observation, state: dict[str, Any]) -> list[Firing]:
    """Decide what fires now. ``state`` (reason -> {"since", "last_fired"}) is updated in
    place and must be committed with the firings."""
    now = obs.now
    firings: list[Firing] = []

    def cooled(reason: str) -> bool:
        last = state.get(reason, {}).get("last_fired")
        return last is None or now - last >= policy.cooldown_seconds

    def holds(reason: str, condition: bool) -> bool:
        st = state.setdefault(reason, {})
        if not condition:
            st.pop("since", None)
            return False
        since = st.setdefault("since", now)
        return now - since >= policy.hold_seconds

    alarms = [a for a in obs.alarms if a.get("signal") in policy.drift_signals]
    if holds("drift", bool(alarms)) and cooled("drift"):
        first = min(alarms, key=lambda a: a["id"])
        firings.append(Firing(
            f"retrain-{obs.model}-drift-{first['id']}", "drift",
            {"alarms": [{k: a.get(k) for k in ("id", "signal", "version", "features", "score",
                                                "rows")} for a in alarms]}))
    if holds("quality", _breached(policy, obs.quality)) and cooled("quality"):
        since = state["quality"]["since"]
        firings.append(Firing(
            f"retrain-{obs.model}-quality-{obs.champion}-{int(since)}", "quality",
            {"metric": policy.quality_metric,
             "value": obs.quality.get(policy.quality_metric or ""),
             "threshold": policy.quality_threshold, "labels": obs.quality.get("labels")}))
    if policy.schedule_days:
        period = policy.schedule_days * 86_400
        anchor = max(obs.champion_created_at,
                     state.get("schedule", {}).get("last_fired") or 0.0,
                     state.get("_any", {}).get("last_fired") or 0.0)
        if now - anchor >= period:
            n = math.floor((now - obs.champion_created_at) / period)
            firings.append(Firing(
                f"retrain-{obs.model}-schedule-{obs.champion}-{n}", "schedule",
                {"every_days": policy.schedule_days, "since": anchor}))
    for f in firings:
        state.setdefault(f.reason, {})["last_fired"] = now
        state.setdefault("_any", {})["last_fired"] = now
    return firings


def event(firing: Firing, model: str, champion: str, lineage: dict[str, Any], base_url: str,
          now_iso: str) -> dict[str, Any]:
    """The retraining event (Standard Webhooks payload shape)."""
    return {"type": "vigil.retrain.requested", "timestamp": now_iso, "data": {
        "event_id": firing.event_id, "model": model, "champion_version": champion,
        "lineage": {"dataset_sha256": lineage.get("dataset_sha256"),
                    "code_commit": lineage.get("code_commit"),
                    "hyperparameters": lineage.get("hyperparameters")},
        "reason": firing.reason, "evidence": firing.evidence, "gateway": base_url}}
