"""Batch samplers whose order depends only on (seed, epoch), so a resumed run sees the same batches."""
from __future__ import annotations

import torch
from torch.utils.data import Sampler


class EpochBatchSampler(Sampler[list[int]]):
    """Shuffled (or sequential) index batches; the permutation of epoch ``e`` is drawn from ``seed`` and ``e``.

    Lightning calls :meth:`set_epoch` at the start of every training epoch. Because no generator state
    is carried from one epoch to the next, a run resumed from an end-of-epoch checkpoint draws exactly
    the batches the uninterrupted run would have drawn.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        self.n, self.batch_size, self.shuffle, self.seed, self.drop_last = n, batch_size, shuffle, seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        for i in range(len(self)):
            yield order[i * self.batch_size:(i + 1) * self.batch_size].tolist()
