"""autovi-core: interfaces, plugin discovery, datasets, official-grade metrics, runner and CLI
for unsupervised visual anomaly detection on the AutoVI benchmark."""

from .dataset import IMAGE_LAYOUT, Category, DatasetProvider, DefectConfig, KeyedImages, Sample, image_paths
from .detector import Capabilities, Detector, LabelledDefects, Prediction
from .errors import AutoviError, ConfigError, ContractError, DataError, NotFittedError, PluginError
from .hookspecs import hookimpl
from .metric import EvaluationData, Metric

__version__ = "1.1.0"

API_VERSION = "1.1"
"""The plugin contract's version (major.minor). Plugins pin ``autovi-core>=1.1,<2`` (1.1 added ``Detector.params``): a plugin whose
pin excludes the running core is listed as incompatible and not loaded (see docs/plugins.md)."""

__all__ = [
    "API_VERSION",
    "IMAGE_LAYOUT",
    "AutoviError",
    "ConfigError",
    "ContractError",
    "DataError",
    "NotFittedError",
    "PluginError",
    "Capabilities",
    "Category",
    "DatasetProvider",
    "DefectConfig",
    "Detector",
    "EvaluationData",
    "KeyedImages",
    "LabelledDefects",
    "Metric",
    "Prediction",
    "Sample",
    "hookimpl",
    "image_paths",
    "__version__",
]
