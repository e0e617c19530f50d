"""DRAEM for autovi: a reconstructive and a discriminative sub-network trained on synthetic anomalies."""
