"""PatchCore for autovi: nearest-neighbour anomaly scores against a coreset of nominal patch features."""
