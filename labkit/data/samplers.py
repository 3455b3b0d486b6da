"""Batch samplers whose order depends only on (seed, epoch), so a resumed run sees the same batches."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DistributedSampler


class EpochBatchSampler(DistributedSampler):
    """Shuffled (or sequential) index batches; the permutation of epoch ``e`` is drawn from ``seed`` and ``e``.

    Lightning calls :meth:`set_epoch` at the start of every training epoch. Because no generator state
    is carried from one epoch to the next, a run resumed from an end-of-epoch checkpoint draws exactly
    the batches the uninterrupted run would have drawn.

    Under DDP (``num_replicas`` > 1) ``batch_size`` is the *global* batch: every rank takes its share of
    each global batch, so the optimisation is the same on 1 or N devices. It subclasses
    ``DistributedSampler`` only so that Lightning sees the sharding is handled and leaves it alone.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 num_replicas: int = 1, rank: int = 0):
        # DistributedSampler.__init__ is not called: it needs a dataset and a process group, neither used here
        self.n, self.batch_size, self.shuffle, self.seed, self.drop_last = n, batch_size, shuffle, seed, drop_last
        self.num_replicas, self.rank = num_replicas, rank
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
            batch = order[i * self.batch_size:(i + 1) * self.batch_size]
            if self.num_replicas > 1:
                batch = torch.from_numpy(np.array_split(batch.numpy(), self.num_replicas)[self.rank])
            yield batch.tolist()
