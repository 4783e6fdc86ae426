"""The prediction log: events (``events``), the ids they carry (``ids``), the worker's sink
(``sink``) and segment writer (``writer``), the Monitor's reader (``reader``) and the Parquet
export (``export``). Pure: ``events``, ``ids`` and the record rendering in ``writer``; the rest
is file I/O."""
