"""PaDiM for autovi: Mahalanobis distances to per-position Gaussians of pretrained CNN features."""
