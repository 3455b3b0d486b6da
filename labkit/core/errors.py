"""Exceptions raised for bad input, before any training starts."""


class LabkitError(Exception):
    """Base class: a user-facing error whose message says what to change."""


class ConfigError(LabkitError, ValueError):
    """A configuration value or key is invalid."""


class IncompatibleError(LabkitError, ValueError):
    """Model, data and task cannot work together (shape, channels, classes)."""


class DatasetNotFoundError(LabkitError, FileNotFoundError):
    """A dataset's files are not where labkit looks for them."""


class WeightsNotFoundError(LabkitError, FileNotFoundError):
    """Pretrained weights are neither cached nor downloadable."""
