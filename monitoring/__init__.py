"""What watches models, one package per concern: ``log`` (prediction events, the segment log),
``quality`` (statistics and live quality), ``drift``, ``shadows``, ``rollout``, ``retrain``
(policy, triggers, webhooks); ``monitor`` is the loop that turns the log into derived state and
``metrics`` the Prometheus side. Never imports ``service``."""

from monitoring.log.events import EventSink, InMemoryStatsSink, PredictionEvent

__all__ = ["EventSink", "InMemoryStatsSink", "PredictionEvent"]
