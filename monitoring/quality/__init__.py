"""What a version does and how well: traffic, latency and prediction statistics (``stats``),
live quality from joined labels (``scores``), feedback validation (``feedback``). Pure, but for
``label_join`` (labels against the prediction index, in the Monitor's transaction) and
``outcomes`` (business KPI outcomes joined the same way)."""
