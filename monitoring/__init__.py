"""What watches models: prediction events and their sinks, metrics (and, later, the log,
drift, triggers, rollouts and webhooks). Never imports ``service``."""

from monitoring.events import EventSink, InMemoryStatsSink, PredictionEvent

__all__ = ["EventSink", "InMemoryStatsSink", "PredictionEvent"]
