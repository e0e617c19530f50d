"""SegAD for autovi: a supervised re-scorer of other detectors' anomaly maps (see :mod:`.detector`)."""
