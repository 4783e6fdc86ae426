"""Progressive delivery. Pure: ``analysis`` (gates over a step's window and the rollout state
machine). I/O: ``controller`` (runs in the Monitor and applies the decisions)."""
