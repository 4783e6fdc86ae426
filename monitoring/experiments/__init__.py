"""Experiments on business KPIs: A/B/n tests with always-valid significance. Pure: ``msprt``
(the mixture sequential probability ratio test), ``horizon`` (the truncation and the fixed
horizon, from a committed simulation table), ``decision`` (conclusions, guardrails, the
bandit's shares). I/O: ``controller`` (runs in the Monitor, applies the conclusions)."""
