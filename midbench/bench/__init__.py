"""Commands that orchestrate many runs: sweeps (``midbench bench``), the demo, the calibration of reference sets
and the tuning of recipes. Each is resumable by rerunning the same command."""
