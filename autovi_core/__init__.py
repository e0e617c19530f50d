"""autovi-core: interfaces, plugin discovery, datasets, official-grade metrics, runner and CLI
for unsupervised visual anomaly detection on the AutoVI benchmark."""

from .dataset import IMAGE_LAYOUT, Category, DatasetProvider, DefectConfig, KeyedImages, Sample, image_paths
from .detector import Capabilities, Detector, LabelledDefects, Prediction
from .hookspecs import hookimpl
from .metric import EvaluationData, Metric

__version__ = "0.2.0"

__all__ = [
    "IMAGE_LAYOUT",
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
