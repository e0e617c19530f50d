"""The conformance kit, run with pytest (as ``check_estimator`` is for scikit-learn).

Subclass the mix-in of what your plugin provides in its tests and name it::

    from autovi_core.testing import DatasetConformance, DetectorConformance, MetricConformance

    class TestMyDetector(DetectorConformance):
        detector = "my_detector"          # the registered name
        overrides = {"epochs": 1}         # optional: make the fast profile faster still

- :class:`DetectorConformance` checks a detector plugin on a small generated inspection category;
- :class:`DatasetConformance` checks a dataset plugin on a category you point it at (or build);
- :class:`MetricConformance` checks a metric plugin on small generated evaluation data.

Each class documents its settings (class attributes) and what it checks.
"""

from .dataset import DatasetConformance
from .detector import ConformanceData, DetectorConformance
from .metric import MetricConformance, make_evaluation_data

__all__ = ["ConformanceData", "DatasetConformance", "DetectorConformance", "MetricConformance", "make_evaluation_data"]
