"""Exceptions a user meets: bad input (before any training starts), and runs that stop on purpose."""
from __future__ import annotations


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


class RunStopped(LabkitError):
    """A run stopped on purpose before its end: not a failure. ``status`` is what its metrics.json records instead
    of ``failed`` (a subclass sets it: ``pruned`` by a hyper-parameter search, ``preempted`` by a scheduler; one
    of the statuses metrics.json accepts, ``labkit.run.directory.STATUSES``; another is recorded as ``stopped``
    with the subclass's word in ``stopped_as``);
    ``epoch`` is where it stopped. The run keeps its checkpoints, so it can be resumed."""

    status = "stopped"

    def __init__(self, message: str, epoch: int | None = None):
        super().__init__(message)
        self.epoch = epoch


class DiskFullError(LabkitError, OSError):
    """A write found no space left on its device, or the user's disk quota used up (``errno`` ENOSPC or EDQUOT). The
    message names the folder, what was being written and how much space it needs, and the space left there; files
    written before are complete (labkit writes through temporaries), so a run continues with ``resume=`` once there
    is room. ``folder``, ``needed`` (bytes) and ``free`` (bytes, None when unknown) say the same for callers."""

    def __init__(self, message: str, folder=None, needed: int | None = None, free: int | None = None,
                 errno: int | None = None):
        super().__init__(message)
        self.errno = errno  # OSError's own field (no strerror or filename: str() stays the message)
        self.folder = folder
        self.needed = needed
        self.free = free
