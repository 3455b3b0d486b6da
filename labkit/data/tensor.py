"""Moved: the in-memory data module lives in :mod:`labkit.data.memory` (this name stays importable, for code and
saved configs that name ``labkit.data.tensor``)."""
from labkit.data.memory import BatchDataset, InMemoryImageDataModule, Split, holdout

__all__ = ["InMemoryImageDataModule", "Split", "BatchDataset", "holdout"]
