"""The prediction log: events (``events``) and the ids they carry (``ids``); the worker's side,
a ``sink`` in front of a bounded ``queue`` drained by a writer thread — local segment files
(``writer``) or NATS JetStream (``publisher``, partitioned by model: ``partitions``,
``jetstream``); the Monitor's side, ``reader`` (segments) or ``consumer`` (JetStream); at rest,
``frames`` (AES-256-GCM) and ``pii`` (dropped and hashed inputs); the Parquet ``export``.
Pure: ``events``, ``ids``, ``partitions``, ``pii`` and the record rendering in ``writer``."""
