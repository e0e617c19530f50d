"""A minimal third-party autovi plugin, used to prove plugin discovery and the conformance suite."""
