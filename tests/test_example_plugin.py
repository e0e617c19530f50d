"""The example plugin (examples/autovi-plugin-pixel-gaussian): discovered as a separate distribution.

Its conformance suite is its own tests/ (run by `make test`); tests/test_scaffold.py checks that it
is exactly what `autovi new-plugin pixel_gaussian` writes.
"""

from autovi_core.registry import get_registry


def test_example_is_a_separate_distribution(example_plugin):
    registry = get_registry()
    assert registry.distribution_of("detector", "pixel_gaussian") == "autovi-plugin-pixel-gaussian"
    assert registry.version_of("detector", "pixel_gaussian") == "0.1.0"
