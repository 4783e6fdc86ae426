"""Drift detection. Pure: ``detectors`` (normal scores, CUSUM banks, PSI), ``calibration``
(thresholds for a false-alarm budget) and ``signals`` (a version's signals and alarms). I/O:
``tracker`` (the Monitor's side: batches from the log, state and alarms in the store)."""
