"""DSR for autovi: a discrete VQ feature space, feature-space anomaly generation, subspace restriction."""
