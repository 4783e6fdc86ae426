"""Drift detection. Pure: ``base`` (reference, config, alarm, the ``Detector`` interface),
``detectors`` (normal scores, CUSUM banks, PSI), ``river_banks`` (River's drift detectors behind
the same interface, calibrated by the offline ``river_table``), ``joint`` (the joint signal),
``columns`` (each signal's detector layout), ``calibration`` (thresholds for a false-alarm
budget) and ``signals`` (a version's signals and alarms). I/O: ``tracker`` (the Monitor's side:
batches from the log, state and alarms in the store)."""
