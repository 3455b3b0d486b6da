"""Which samples a batch holds: seeded batch samplers, and pairs/triplets for metric learning.

Every order here depends only on ``(seed, epoch)`` (Lightning sets the epoch through ``set_epoch``), so a run
resumed from an end-of-epoch checkpoint sees exactly the batches the uninterrupted run would have seen.

* :class:`EpochBatchSampler`: shuffled (or sequential) index batches of single samples.
* Pairs and triplets, drawn with vectorized NumPy (no Python loop per sample). A *similarity* says which
  samples are alike (a data module's :meth:`~labkit.data.LabDataModule.similarity`):

  * :class:`ClassSimilarity`: same label (MNIST, CIFAR, ...), as in notes 000/002;
  * :class:`NeighbourSimilarity`: precomputed neighbour lists (CSR), e.g. EgoCart frames closer than 0.3 m
    and 45 degrees (:mod:`labkit.data.egocart`).

  From it, :func:`sample_pairs` gives every sample one partner, similar for exactly half of the samples
  (as the notes' probability 1/2; pair label 0 = similar, 1 = dissimilar, the notes' convention), and
  :func:`sample_triplets` gives every sample that has a positive one (anchor, positive, negative) triplet. A
  positive is never the anchor itself: a pair whose anchor has no similar sample becomes a dissimilar pair, and
  such an anchor has no triplet.

  :class:`TupleBatchSampler` draws the tuples again at every epoch from ``seed`` and the epoch number (same seed
  and epoch, same draws) and yields batches of index rows; :class:`TupleDataset` turns a row batch into a
  :class:`~labkit.data.batches.PairBatch` or :class:`~labkit.data.batches.TripletBatch` by asking a batch-indexed
  dataset (``ds[indices] -> (x, y)``) for each column.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from labkit.core.errors import ConfigError, IncompatibleError
from labkit.data.batches import PairBatch, TripletBatch

MODES = ("pairs", "triplets")


# ----- single samples ---------------------------------------------------------------------------
class _Resumable:
    """A seeded sampler that can start one epoch part-way: a run resumed from a mid-epoch checkpoint skips the batches
    of that epoch it trained on before it stopped (the order is the same: it depends only on seed and epoch)."""

    _start: tuple[int, int] | None = None

    def resume_at(self, epoch: int, batches: int) -> None:
        """The next pass over epoch ``epoch`` starts at its batch ``batches`` (once; later passes are whole)."""
        self._start = (int(epoch), int(batches))

    def _first(self) -> int:
        start, self._start = self._start, None
        return start[1] if start is not None and start[0] == self.epoch else 0


class EpochBatchSampler(_Resumable, DistributedSampler):
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
        for i in range(self._first(), len(self)):
            batch = order[i * self.batch_size:(i + 1) * self.batch_size]
            if self.num_replicas > 1:
                batch = torch.from_numpy(np.array_split(batch.numpy(), self.num_replicas)[self.rank])
            yield batch.tolist()


# ----- pairs and triplets -------------------------------------------------------------------------
class ClassSimilarity:
    """Similar = same label. ``labels``: any 1-D integer (or hashable numeric) vector."""

    def __init__(self, labels):
        y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
        self.n = len(y)
        self.order = np.argsort(y, kind="stable")               # samples grouped by class
        classes, cls_of, counts = np.unique(y, return_inverse=True, return_counts=True)
        self.cls = cls_of.reshape(-1)                            # class position of each sample
        self.counts = counts
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.rank = np.empty(self.n, dtype=np.int64)             # position of each sample inside its class block
        self.rank[self.order] = np.arange(self.n) - self.starts[self.cls[self.order]]
        self.num_classes = len(classes)

    def has_positive(self) -> np.ndarray:
        return self.counts[self.cls] > 1

    def has_negative(self) -> np.ndarray:
        return np.full(self.n, self.num_classes > 1)

    def positives(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One uniformly drawn same-class sample other than the anchor (anchors must have one)."""
        c = self.cls[anchors]
        u = (rng.random(len(anchors)) * (self.counts[c] - 1)).astype(np.int64)
        u += u >= self.rank[anchors]                             # skip the anchor's own slot
        return self.order[self.starts[c] + u]

    def negatives(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A different class drawn uniformly, then a sample of it (the notes' procedure)."""
        c = self.cls[anchors]
        other = (rng.random(len(anchors)) * (self.num_classes - 1)).astype(np.int64)
        other += other >= c
        u = (rng.random(len(anchors)) * self.counts[other]).astype(np.int64)
        return self.order[self.starts[other] + u]


class NeighbourSimilarity:
    """Similar = listed neighbour. ``indptr``/``indices``: CSR lists (neighbours of i are
    ``indices[indptr[i]:indptr[i+1]]``, sorted, without i itself); build them with :meth:`from_pairs`."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray):
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.n = len(self.indptr) - 1
        self.degree = np.diff(self.indptr)
        rows = np.repeat(np.arange(self.n, dtype=np.int64), self.degree)
        self._keys = rows * self.n + self.indices                # sorted: rows ascending, indices sorted per row

    @classmethod
    def from_pairs(cls, n: int, i: np.ndarray, j: np.ndarray) -> "NeighbourSimilarity":
        """Symmetric lists from unordered similar pairs ``(i[k], j[k])`` (self-pairs and duplicates dropped)."""
        i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
        keep = i != j
        a, b = np.concatenate([i[keep], j[keep]]), np.concatenate([j[keep], i[keep]])
        keys = np.unique(a * n + b)
        rows, cols = keys // n, keys % n
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
        return cls(indptr, cols)

    def neighbours(self, i: int) -> np.ndarray:
        return self.indices[self.indptr[i]:self.indptr[i + 1]]

    def is_similar(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        keys = np.asarray(i, dtype=np.int64) * self.n + np.asarray(j, dtype=np.int64)
        pos = np.searchsorted(self._keys, keys)
        pos = np.minimum(pos, max(len(self._keys) - 1, 0))
        return (self._keys[pos] == keys) if len(self._keys) else np.zeros(len(keys), dtype=bool)

    def has_positive(self) -> np.ndarray:
        return self.degree > 0

    def has_negative(self) -> np.ndarray:
        return self.degree < self.n - 1

    def positives(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = (rng.random(len(anchors)) * self.degree[anchors]).astype(np.int64)
        return self.indices[self.indptr[anchors] + u]

    def negatives(self, anchors: np.ndarray, rng: np.random.Generator, max_rounds: int = 100) -> np.ndarray:
        """Uniform over the samples that are neither the anchor nor its neighbours (rejection sampling in
        vectorized rounds; neighbours are a small share of the data, so few rounds are needed)."""
        out = np.empty(len(anchors), dtype=np.int64)
        todo = np.arange(len(anchors))
        for _ in range(max_rounds):
            if not len(todo):
                return out
            a = anchors[todo]
            j = (rng.random(len(todo)) * self.n).astype(np.int64)
            ok = (j != a) & ~self.is_similar(a, j)
            out[todo[ok]] = j[ok]
            todo = todo[~ok]
        for t in todo:  # anchors similar to almost everything: pick from the complement directly
            a = anchors[t]
            mask = np.ones(self.n, dtype=bool)
            mask[self.neighbours(a)] = False
            mask[a] = False
            out[t] = rng.choice(np.flatnonzero(mask))
        return out


def sample_pairs(sim, rng: np.random.Generator) -> np.ndarray:
    """``(N, 3)`` int64 rows ``(i, j, pair_label)``: every sample once as ``i``; exactly half of the pairs (rounded
    down) are drawn similar (label 0), the rest dissimilar (label 1). Anchors without a similar sample get a
    dissimilar partner instead."""
    n = sim.n
    if n and not sim.has_negative().any():
        raise IncompatibleError("cannot draw dissimilar pairs: every sample is similar to every other (one class?)")
    label = (rng.permutation(n) >= n // 2).astype(np.int64)     # 0 = similar, 1 = dissimilar
    label[(label == 0) & ~sim.has_positive()] = 1
    label[(label == 1) & ~sim.has_negative()] = 0
    anchors = np.arange(n, dtype=np.int64)
    j = np.empty(n, dtype=np.int64)
    s = label == 0
    j[s] = sim.positives(anchors[s], rng)
    j[~s] = sim.negatives(anchors[~s], rng)
    return np.stack([anchors, j, label], axis=1)


def sample_triplets(sim, rng: np.random.Generator) -> np.ndarray:
    """``(M, 3)`` int64 rows ``(anchor, positive, negative)``, one per sample that has both a similar and a
    dissimilar sample."""
    anchors = np.flatnonzero(sim.has_positive() & sim.has_negative()).astype(np.int64)
    if sim.n and not len(anchors):
        raise IncompatibleError("cannot draw triplets: no sample has both a similar and a dissimilar sample "
                                "(every class has a single sample, or there is a single class)")
    return np.stack([anchors, sim.positives(anchors, rng), sim.negatives(anchors, rng)], axis=1)


def draw(sim, mode: str, seed: int, epoch: int = 0) -> np.ndarray:
    """The tuples of ``mode`` for ``(seed, epoch)``: reproducible, different for every epoch."""
    if mode not in MODES:
        raise ConfigError(f"sampling={mode!r} is invalid: choose one of {', '.join(MODES)}")
    rng = np.random.default_rng([int(seed), int(epoch)])
    return sample_pairs(sim, rng) if mode == "pairs" else sample_triplets(sim, rng)


class TupleBatchSampler(_Resumable, DistributedSampler):
    """Yields ``(B, 3)`` int64 index rows. With ``resample`` the tuples of epoch ``e`` are drawn from
    ``(seed, e)`` (Lightning calls :meth:`set_epoch` at the start of every training epoch, so a resumed run draws
    what the uninterrupted one would have); without, one fixed draw (epoch 0). ``shuffle`` permutes the rows,
    seeded likewise.

    Under DDP (``num_replicas`` > 1) ``batch_size`` is the global batch and every rank takes its share of each
    global batch, as :class:`EpochBatchSampler` does; subclassing ``DistributedSampler``
    (without calling its ``__init__``) tells Lightning the sharding is handled.
    """

    def __init__(self, sim, mode: str, batch_size: int, seed: int = 0, shuffle: bool = True,
                 resample: bool = True, drop_last: bool = False, num_replicas: int = 1, rank: int = 0):
        self.sim, self.mode, self.batch_size = sim, mode, batch_size
        self.seed, self.shuffle, self.resample, self.drop_last = seed, shuffle, resample, drop_last
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self._cache: tuple[int, np.ndarray] | None = None
        self._count = sim.n if mode == "pairs" else int((sim.has_positive() & sim.has_negative()).sum())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def tuples(self) -> np.ndarray:
        """The tuples of the current epoch (drawn once per epoch)."""
        epoch = self.epoch if self.resample else 0
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, draw(self.sim, self.mode, self.seed, epoch))
        return self._cache[1]

    def __iter__(self) -> Iterator[np.ndarray]:
        rows = self.tuples()
        if self.shuffle:
            rows = rows[np.random.default_rng([int(self.seed), self.epoch, 1]).permutation(len(rows))]
        for k in range(self._first(), len(self)):
            batch = rows[k * self.batch_size:(k + 1) * self.batch_size]
            yield np.array_split(batch, self.num_replicas)[self.rank] if self.num_replicas > 1 else batch

    def __len__(self) -> int:
        if self.drop_last:
            return self._count // self.batch_size
        return -(-self._count // self.batch_size)


class TupleDataset(Dataset):
    """Indexed by a ``(B, 3)`` row batch; ``base[indices]`` must return ``(x, y)`` for an index vector."""

    def __init__(self, base: Dataset, mode: str):
        if mode not in MODES:
            raise ConfigError(f"sampling={mode!r} is invalid: choose one of {', '.join(MODES)}")
        self.base, self.mode = base, mode

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, rows: np.ndarray):
        rows = np.asarray(rows)
        if self.mode == "pairs":
            (x1, y1), (x2, y2) = self.base[rows[:, 0]], self.base[rows[:, 1]]
            return PairBatch(x1, x2, torch.from_numpy(rows[:, 2].copy()), y1, y2)
        (xa, ya), (xp, yp), (xn, yn) = (self.base[rows[:, c]] for c in range(3))
        return TripletBatch(xa, xp, xn, ya, yp, yn)


def tuple_loader(base: Dataset, sim, mode: str, batch_size: int, seed: int, train: bool, num_workers: int = 0,
                 pin_memory: bool = False, num_replicas: int = 1, rank: int = 0,
                 resample: bool = True) -> DataLoader:
    """DataLoader of pair/triplet batches over a batch-indexed dataset ``base``.

    Training: shuffled, drawn again every epoch (``resample=False``: one draw, reused every epoch, reshuffled).
    Evaluation: one fixed draw (seed + 1), in order, so that the
    validation loss of different epochs is measured on the same tuples.
    """
    sampler = TupleBatchSampler(sim, mode, batch_size, seed=seed if train else seed + 1, shuffle=train,
                                resample=train and resample, num_replicas=num_replicas, rank=rank)
    # an own generator: creating the iterator must not consume the global RNG (bit-identical resume)
    return DataLoader(TupleDataset(base, mode), sampler=sampler, batch_size=None, num_workers=num_workers,
                      persistent_workers=num_workers > 0, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(seed))

