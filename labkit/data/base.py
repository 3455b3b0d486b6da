"""Base class of labkit's data modules.

A data module knows its images (channels, size, classes, normalization) and nothing about losses.
A task tells it which samples it needs through :attr:`LabDataModule.sampling` (``"single"``,
``"pairs"`` or ``"triplets"``) before ``setup``.
"""
from __future__ import annotations

from typing import Sequence

import pytorch_lightning as pl

from labkit import checks

SAMPLINGS = ("single", "pairs", "triplets")


class LabDataModule(pl.LightningDataModule):
    """Common settings: ``data_dir``, ``batch_size``, ``num_workers``, ``seed`` and the image geometry."""

    name = "data"

    def __init__(self, data_dir: str = "data", batch_size: int = 64, eval_batch_size: int | None = None,
                 num_workers: int = 0, seed: int = 0, channels: int = 1, image_size: int = 28,
                 num_classes: int = 10, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 sampling: str = "single"):
        super().__init__()
        LabDataModule.check_args(locals())
        self.data_dir = str(data_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.channels = channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.mean = list(mean) if mean is not None else None
        self.std = list(std) if std is not None else None
        self.sampling = sampling
        self.classes: list[str] = [str(i) for i in range(num_classes)]

    @staticmethod
    def check_args(a) -> None:
        """Checks of this class's own arguments (``a``: name -> value), run by ``__init__`` and, on the config before
        anything is built, by :func:`labkit.checks.check_target`."""
        checks.positive_int("data.batch_size", a["batch_size"])
        checks.positive_int("data.eval_batch_size", a["eval_batch_size"], optional=True)
        for key in ("channels", "image_size", "num_classes"):
            checks.positive_int(f"data.{key}", a[key])
        checks.non_negative_int("data.num_workers", a["num_workers"])
        for key, minimum in (("mean", None), ("std", 0.0)):
            checks.per_channel(f"data.{key}", a[key], a["channels"], above=minimum, optional=True)

    @property
    def sampling(self) -> str:
        return self._sampling

    @sampling.setter
    def sampling(self, value: str) -> None:
        self._sampling = checks.one_of("sampling", value, SAMPLINGS)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    # ----- the contract evaluate.py and the tasks rely on -----------------------------------------
    def _loader(self, split: str, train: bool, evaluation: bool = False):
        """The DataLoader of ``split``: shuffled/augmented when ``train``; ``evaluation`` asks for the plain
        ``(x, y)`` batches evaluate.py reads, whatever the task's sampling, with no persistent workers."""
        raise NotImplementedError

    def train_dataloader(self):
        return self._loader("train", train=True)

    def val_dataloader(self):
        return self._loader("val", train=False)

    def test_dataloader(self):
        return self._loader("test", train=False)

    def predict_dataloader(self):
        return self._loader("test", train=False)

    def loader(self, split: str):
        """Evaluation DataLoader over ``train``, ``val`` or ``test``: no shuffling, no augmentation,
        yielding ``(x, y)`` batches that :meth:`transform` turns into model input."""
        checks.one_of("split", split, ("train", "val", "test"))
        return self._loader(split, train=False, evaluation=True)

    def transform(self, x, train: bool):
        """Batch transform applied on the device after transfer (identity for modules whose workers
        already return normalized tensors)."""
        return x

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        trainer = getattr(self, "_trainer", None)
        training = bool(trainer is not None and trainer.training)
        if self.sampling != "single":
            # pairs (x1, x2, pair_label, y1, y2) / triplets (xa, xp, xn, ya, yp, yn): transform each image tensor
            images, length = {"pairs": (2, 5), "triplets": (3, 6)}[self.sampling]
            if isinstance(batch, (list, tuple)) and len(batch) == length:
                return tuple(self.transform(b, train=training) if i < images else b for i, b in enumerate(batch))
            return batch
        if not isinstance(batch, (list, tuple)) or len(batch) != 2:
            return batch
        x, y = batch
        return self.transform(x, train=training), y
