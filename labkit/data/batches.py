"""The batches a data module hands a task, defined once.

* single: a plain ``(x, y)`` pair of tensors (what :meth:`labkit.data.LabDataModule.loader` always yields);
* :class:`PairBatch` when the task trains on pairs (``sampling = "pairs"``);
* :class:`TripletBatch` when it trains on triplets (``sampling = "triplets"``).

Both are NamedTuples, so ``x1, x2, target, y1, y2 = batch`` unpacks them as plain tuples did, and Lightning,
``pin_memory`` and the DataLoader workers carry them through unchanged. Their images are uint8 until the data
module's ``transform`` ran on the device (:meth:`map_images`).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from torch import Tensor


class PairBatch(NamedTuple):
    """``B`` pairs: images ``x1``, ``x2``; ``target`` 0 = similar, 1 = dissimilar (the notes' convention);
    ``y1``, ``y2`` the labels of both images (class ids, or poses for pose-labelled data)."""

    x1: Tensor
    x2: Tensor
    target: Tensor
    y1: Tensor
    y2: Tensor

    def map_images(self, fn: Callable[[Tensor], Tensor]) -> "PairBatch":
        return self._replace(x1=fn(self.x1), x2=fn(self.x2))


class TripletBatch(NamedTuple):
    """``B`` triplets: ``anchor`` images, a ``positive`` similar to each anchor, a ``negative`` dissimilar to it,
    and the labels of the three."""

    anchor: Tensor
    positive: Tensor
    negative: Tensor
    y_anchor: Tensor
    y_positive: Tensor
    y_negative: Tensor

    def map_images(self, fn: Callable[[Tensor], Tensor]) -> "TripletBatch":
        return self._replace(anchor=fn(self.anchor), positive=fn(self.positive), negative=fn(self.negative))
