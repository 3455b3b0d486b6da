"""Moved: :class:`EpochBatchSampler` lives in :mod:`labkit.data.sampling` (this name stays importable)."""
from labkit.data.sampling import EpochBatchSampler

__all__ = ["EpochBatchSampler"]
