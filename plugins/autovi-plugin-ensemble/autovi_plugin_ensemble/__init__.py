"""Late-fusion ensemble for autovi: other detectors' normalised maps and scores, fused (see :mod:`.detector`)."""
