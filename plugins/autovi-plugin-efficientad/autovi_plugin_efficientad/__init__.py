"""EfficientAD for autovi (Batzner et al., "EfficientAD: Accurate Visual Anomaly Detection at Millisecond-Level Latencies", WACV 2024)."""
