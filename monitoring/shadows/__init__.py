"""Shadow traffic: ``lanes`` (a bounded queue, thread, timeout and circuit breaker per shadow
version), ``guards`` (the circuit breaker and the run-queue clock) and ``mirror`` (feeds the
lanes from the logged records, in the Monitor)."""
