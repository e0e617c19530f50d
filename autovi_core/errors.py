"""Exceptions with one-line, user-facing messages (the CLI prints them without a traceback)."""


class AutoviError(Exception):
    """Base class: the message names the file, plugin or option at fault."""


class DataError(AutoviError):
    """A dataset, ground-truth or anomaly-map file is missing or malformed."""


class PluginError(AutoviError):
    """A plugin is unknown, broken, or was asked for something it does not offer."""


class ConfigError(AutoviError):
    """An option, profile or hyperparameter override is invalid."""


class CombinationError(ConfigError):
    """Hyperparameters each inside their domain, impossible together (``Detector.check_hparams``)."""


class NotFittedError(AutoviError, RuntimeError):
    """``predict`` or ``state_dict`` was called on a detector that was neither fitted nor loaded."""


class ContractError(AutoviError):
    """A plugin broke the detector contract (e.g. its fit wrote into the user's hyperparameters)."""
