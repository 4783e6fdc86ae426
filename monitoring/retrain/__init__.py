"""Retraining. Pure: ``policy`` (observations in, firings out). I/O: ``triggers`` (gathers the
facts in the Monitor, writes firings to the outbox) and ``webhooks`` (outbox, signing, delivery)."""
