"""In-memory image data modules: the whole dataset lives in uint8 tensors (module ``labkit.data.tensor`` before).

Batches are drawn by index from those tensors (no per-sample Python work, no worker processes) and
are converted, augmented and normalized as whole batches in :meth:`on_after_batch_transfer`, i.e. on
the GPU when training there. With ``keep_on_device: true`` (default) the tensors themselves are moved
to the GPU, so an epoch never touches the host.

Here: :class:`Split` (images + labels of one split), :class:`BatchDataset` (a whole batch per index list),
:func:`holdout` (the seeded stratified validation split) and :class:`InMemoryImageDataModule`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from labkit.core import checks
from labkit.core.errors import IncompatibleError
from labkit.data import augment as A
from labkit.data.base import LabDataModule
from labkit.data.sampling import ClassSimilarity, EpochBatchSampler, tuple_loader
from labkit.schemas import data as schema

log = logging.getLogger(__name__)


@dataclass
class Split:
    x: torch.Tensor  # uint8 (N, C, H, W)
    y: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


class BatchDataset(Dataset):
    """Indexed with a list of indices, returns the whole batch ``(x[idx], y[idx])``."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, idx):
        device = self.split.y.device
        # non_blocking: a blocking host-to-device copy of the indices would wait for the GPU every step
        idx = torch.as_tensor(idx, dtype=torch.long).to(device, non_blocking=device.type == "cuda")
        # index_select copies whole rows: several times faster on the CPU than advanced indexing (x may also be
        # an image store that is only indexable, e.g. labkit.data.egocart's JpegImages)
        return tuple(t.index_select(0, idx) if isinstance(t, torch.Tensor) and idx.ndim == 1 else t[idx]
                     for t in (self.split.x, self.split.y))


def held_out_count(size: int | float, n: int, name: str = "hold-out size", what: str = "samples") -> int:
    """How many of ``n`` samples a hold-out of ``size`` (a count or a fraction) takes; ConfigError naming ``name``,
    the sizes and what would be valid when it would take them all."""
    checks.count_or_fraction(name, size)
    count = int(round(size * n)) if isinstance(size, float) else int(size)
    if count >= n:
        raise checks.invalid(name, size, f"smaller than the {n} {what} it is taken from", f"The hold-out size {size} "
                             f"would leave none of them for training: choose a count < {n} or a fraction in [0, 1)")
    return count


def holdout(y: np.ndarray, size: int | float, seed: int, name: str = "hold-out size",
            what: str = "samples") -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of ``arange(len(y))`` into (keep, held_out); ``size`` is a count or a fraction.

    ``name`` is the config key the size comes from (e.g. ``data.val_size``), named in the error with the sizes."""
    from sklearn.model_selection import train_test_split

    n = len(y)
    count = held_out_count(size, n, name, what)
    idx = np.arange(n)
    if count == 0:
        return idx, idx[:0]
    n_classes = len(np.unique(y))
    stratify = y if count >= n_classes and n - count >= n_classes else None
    keep, out = train_test_split(idx, test_size=count, random_state=seed, stratify=stratify)
    return np.sort(keep), np.sort(out)


class InMemoryImageDataModule(LabDataModule):
    """Base for datasets that fit in memory. Subclasses implement :meth:`load` (and :meth:`prepare_data`).

    "In memory" means batches are whole index lists cut from one tensor-like image store per split
    (``Split.x[idx]``), normalized and augmented as batches on the device. The store is usually a uint8 tensor;
    it may be anything indexable the same way: :class:`labkit.data.egocart.EgoCartDataModule` keeps its frames on
    disk (a memory-mapped ``.npy`` or JPEGs decoded on access) and still subclasses this.

    Args:
        val_size: validation hold-out taken from the training set, a count or a fraction (seeded, stratified).
        augment: training augmentation on/off (flip, colour jitter, random crop to ``image_size``).
            When off, or at evaluation, images larger than ``image_size`` are centre-cropped.
        hflip: probability of a horizontal flip in training.
        pad: zero padding (pixels per side) before the training crop: 0 = the notes' crop inside the image,
            2 on CIFAR's 32x32 with a 28x28 crop = shifts of up to 4 pixels each way, the usual CIFAR augmentation.
        erasing: probability of torchvision's ``RandomErasing`` per training image (one rectangle of 2-33% of the
            image set to the mean colour), applied to the whole batch at once; 0 = off.
        color_jitter: ``{brightness, contrast, saturation}`` amounts; all 0 reproduces the notes'
            ``ColorJitter()``, which changes nothing.
        keep_on_device: move the dataset tensors to the accelerator at setup.
        channels_last: hand the model its batches in channels-last memory layout (same values, NHWC strides);
            ``None`` (default) = on the CPU only, where oneDNN's convolutions run 1.2-1.9x faster on it
            (BENCHMARKS.md); ``false`` keeps the NCHW layout everywhere.
    """

    native_size: int = 28

    def __init__(self, val_size: int | float = 0.1, augment: bool = False, hflip: float = 0.5,
                 color_jitter: dict | None = None, pad: int = 0, erasing: float = 0.0, keep_on_device: bool = True,
                 download: bool = False,
                 channels_last: bool | None = None, **kwargs):
        super().__init__(**kwargs)
        InMemoryImageDataModule.check_args(locals())
        self.val_size = val_size
        self.augment = augment
        self.hflip = hflip
        self.color_jitter = dict(color_jitter or {})
        self.pad = pad
        self.erasing = erasing
        self.keep_on_device = keep_on_device
        self.download = download
        self.channels_last = channels_last
        self.splits: dict[str, Split] = {}

    # the rules of this class's own arguments (run by __init__ and, on the config, by the pre-flight)
    check_args = staticmethod(schema.InMemoryData.check)

    # ----- to implement -------------------------------------------------------------------------
    def load(self) -> tuple[Split, Split]:
        """Return (official training set, official test set) as uint8 tensors."""
        raise NotImplementedError

    def training_count(self) -> int | None:
        """How many images the training set holds, read without loading them (a file's header); None when that
        cannot be known cheaply (then :meth:`setup` checks ``val_size`` when it loads the data)."""
        return None

    def check_sizes(self) -> None:
        """``data.val_size`` leaves images to train on, when :meth:`training_count` knows how many there are."""
        n = self.training_count()
        if n is not None:
            held_out_count(self.val_size, n, "data.val_size", "training images")

    # ----- Lightning hooks ----------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train, test = self.load()
        self._check(train)
        keep, held = holdout(train.y.numpy(), self.val_size, self.seed, "data.val_size", "training images")
        keep_t, held_t = torch.from_numpy(keep), torch.from_numpy(held)
        self.splits = {"train": Split(train.x[keep_t], train.y[keep_t]),
                       "val": Split(train.x[held_t], train.y[held_t]),
                       "test": test}
        if self.mean is None or self.std is None:
            x = self.splits["train"].x.float().div_(255)
            self.mean = self.mean or x.mean(dim=(0, 2, 3)).tolist()
            self.std = self.std or x.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()
        log.info("%s: %d train, %d val, %d test images of %s", self.name, len(self.splits["train"]),
                 len(self.splits["val"]), len(test), tuple(train.x.shape[1:]))
        device = self._device()
        if self.keep_on_device and device is not None and device.type != "cpu":
            self.splits = {k: v.to(device) for k, v in self.splits.items()}

    def _check(self, train: Split) -> None:
        c, h, w = train.x.shape[1:]
        if c != self.channels:
            raise IncompatibleError(f"{self.name}: the files hold {c}-channel images but data.channels={self.channels}")
        if self.image_size > min(h, w):
            raise IncompatibleError(f"{self.name}: data.image_size={self.image_size} is larger than the "
                                    f"{h}x{w} images; choose image_size <= {min(h, w)}")
        top = int(train.y.max()) + 1 if len(train.y) else 0
        if top > self.num_classes:
            raise IncompatibleError(f"{self.name}: labels go up to {top - 1} but data.num_classes={self.num_classes}")

    def _loader(self, split: str, train: bool, evaluation: bool = False) -> DataLoader:
        """Batches of ``split``; pairs/triplets when ``self.sampling`` says so, unless ``evaluation``."""
        if not self.splits:
            self.setup()
        ds = BatchDataset(self.splits[split])
        on_host = self.splits[split].x.device.type == "cpu"
        workers = self.num_workers if on_host else 0
        world, rank = self._replicas()
        if self.sampling != "single" and not evaluation:
            # metric learning: PairBatch or TripletBatch batches (labkit.data.batches), drawn again each training
            # epoch from (seed, epoch) unless resample_tuples is false; fixed draws for val/test (labkit.data.sampling)
            loader = tuple_loader(ds, self.similarity(split), self.sampling,
                                  self.batch_size if train else self.eval_batch_size, self.seed, train,
                                  num_workers=workers, pin_memory=on_host and torch.cuda.is_available(),
                                  num_replicas=world, rank=rank, resample=self.resample_tuples)
            if train:
                self._resume(loader.sampler)
            return loader
        bs = self.batch_size if train else self.eval_batch_size
        sampler = EpochBatchSampler(len(ds), bs, shuffle=train, seed=self.seed, num_replicas=world, rank=rank)
        if train:
            self._resume(sampler)  # a mid-epoch checkpoint's resume: the batches it trained on are skipped
        # an own generator: creating the iterator must not consume the global RNG (bit-identical resume)
        return DataLoader(ds, sampler=sampler, batch_size=None, generator=torch.Generator().manual_seed(self.seed),
                          num_workers=workers, persistent_workers=workers > 0,
                          pin_memory=on_host and torch.cuda.is_available())

    def similarity(self, split: str):
        """Same class label = similar (:class:`~labkit.data.sampling.ClassSimilarity` on the split's labels)."""
        if not self.splits:
            self.setup()
        return ClassSimilarity(self.splits[split].y)

    # ----- batch transforms ---------------------------------------------------------------------
    def transform(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """uint8 batch -> normalized float batch at ``image_size``, augmented when ``train``."""
        gen = None
        if train and self.augment:
            x = A.random_hflip(x, self.hflip, generator=gen) if self.hflip else x
            x = A.random_crop(A.pad(x, self.pad), self.image_size, generator=gen)
            if any(self.color_jitter.values()):
                x = A.color_jitter(A.to_float(x), **self.color_jitter, generator=gen)
            return A.random_erasing(self._normalize(x), self.erasing, generator=gen)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = A.center_crop(x, self.image_size)
        return self._normalize(x)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``A.normalize(A.to_float(x), mean, std)`` as one fused pass ``x * scale + shift``, with the per-channel
        constants made once per device (building them from Python lists every batch cost a blocking copy to
        the GPU each step, and every extra full-batch pass costs time on the CPU)."""
        if x.dtype not in (torch.uint8, torch.float32):
            x = x.float()
        key = (x.device, x.dtype, tuple(self.mean), tuple(self.std))
        cached = getattr(self, "_affine", None)
        if cached is None or cached[0] != key:
            div = 255.0 if x.dtype == torch.uint8 else 1.0
            scale = torch.tensor([1.0 / (div * s) for s in self.std], dtype=torch.float32).view(1, -1, 1, 1)
            shift = torch.tensor([-m / s for m, s in zip(self.mean, self.std)], dtype=torch.float32).view(1, -1, 1, 1)
            cached = self._affine = (key, scale.to(x.device), shift.to(x.device))
        cl = self.channels_last if self.channels_last is not None else x.device.type == "cpu"
        if cl and x.ndim == 4:  # written straight into an NHWC buffer: no extra pass
            out = torch.empty(x.shape, dtype=torch.float32, device=x.device, memory_format=torch.channels_last)
            return torch.addcmul(cached[2], x, cached[1], out=out)
        return torch.addcmul(cached[2], x, cached[1])
