"""The minimal example plugin: discovered as a separate distribution and conformant."""

from autovi_core.registry import get_registry
from autovi_core.testing import DetectorConformance


def test_example_is_a_separate_distribution(example_plugin):
    registry = get_registry()
    assert registry.distribution_of("detector", "pixel_gaussian") == "autovi-example-detector"
    assert registry.version_of("detector", "pixel_gaussian") == "0.1.0"


class TestPixelGaussianConformance(DetectorConformance):
    detector = "pixel_gaussian"
    min_auroc = 0.7
    min_pixel_auroc = 0.85  # reaches 0.943
