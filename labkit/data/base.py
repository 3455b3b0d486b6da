"""Base class of labkit's data modules, and the contract tasks and reports rely on.

A data module knows its images (channels, size, classes, normalization) and nothing about losses. What tasks
and reports may use is declared on :class:`LabDataModule`, each with a documented default:

* ``classes`` (names), ``label_kind`` (``"class"``; ``"pose"`` for EgoCart), ``input_shape``, ``mean``/``std``;
* ``sampling``: what the training batches hold (``"single"``, ``"pairs"`` or ``"triplets"``), told by the task
  once, in :meth:`labkit.tasks.LabTask.check_compatible` (which :func:`labkit.run.lifecycle.build` calls);
* ``train/val/test_dataloader()``: ``(x, y)`` batches, or :class:`~labkit.data.batches.PairBatch` /
  :class:`~labkit.data.batches.TripletBatch`; :meth:`loader` always gives plain ``(x, y)`` batches
  (what evaluation reads, whatever ``sampling`` is);
* :meth:`similarity` (which samples are alike) and :meth:`poses` (pose-labelled data only).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pytorch_lightning as pl

from labkit.core import checks
from labkit.core.errors import IncompatibleError
from labkit.data.batches import PairBatch, TripletBatch
from labkit.schemas import data as schema

if TYPE_CHECKING:
    import torch

SAMPLINGS = ("single", "pairs", "triplets")


class LabDataModule(pl.LightningDataModule):
    """Common settings: ``data_dir``, ``batch_size``, ``num_workers``, ``seed`` and the image geometry.

    ``resample_tuples`` (metric learning only): ``true`` draws new training pairs/triplets every epoch (from
    ``(seed, epoch)``), ``false`` draws them once and reuses them every epoch, as note 002 does (its presets).
    """

    name = "data"
    #: what a label is: ``"class"`` (an integer in ``0..num_classes-1``, named by :attr:`classes`) or ``"pose"``
    #: (EgoCart's ``(x, y, u, v)`` rows, see :meth:`poses`)
    label_kind = "class"

    def __init__(self, data_dir: str = "data", batch_size: int = 64, eval_batch_size: int | None = None,
                 num_workers: int = 0, seed: int = 0, channels: int = 1, image_size: int = 28,
                 num_classes: int = 10, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 sampling: str = "single", resample_tuples: bool = True):
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
        self.resample_tuples = resample_tuples
        # class names, label i is classes[i]; modules that know the names (CIFAR, image folders) replace them
        self.classes: list[str] = [str(i) for i in range(num_classes)]
        self._resume_at: tuple[int, int] | None = None  # resume_training_at

    # the rules of this class's own arguments (run by __init__ and, on the config, by the pre-flight)
    check_args = staticmethod(schema.LabData.check)

    def resume_training_at(self, epoch: int, batches: int) -> None:
        """The next training loader starts epoch ``epoch`` at its batch ``batches``: a run resumed from a mid-epoch
        checkpoint skips the batches it trained on before it stopped (told by ``labkit.callbacks.EpochSeed`` when
        the checkpoint is read, before Lightning asks for the loader). Loaders whose sampler cannot (a plain shuffling
        ``DataLoader``) start the epoch again, and Lightning warns that the resume is not exact."""
        self._resume_at = (int(epoch), int(batches))

    def _resume(self, sampler) -> None:
        """Hand a pending :meth:`resume_training_at` to a training loader's seeded sampler (once)."""
        if self._resume_at is not None:
            sampler.resume_at(*self._resume_at)
            self._resume_at = None

    def check_available(self) -> None:
        """Raise :class:`labkit.core.errors.DatasetNotFoundError` (the expected files named) when the dataset is not
        where the config says and will not be downloaded; cheap, reads no data: the pre-flight calls it before a
        run's directory exists. Nothing to check by default (data embedded in a package)."""

    def check_sizes(self) -> None:
        """Raise :class:`labkit.core.errors.ConfigError` when a hold-out (``data.val_size``...) would take every
        sample, where the sizes can be read without loading the data (a file's header); the pre-flight calls it after
        :meth:`check_available`. Nothing to check by default."""

    def sources(self) -> list[Path]:
        """The dataset files and folders this module reads (their fingerprints go into a run's provenance.json);
        empty for data embedded in a package (its version is recorded instead)."""
        return []

    @property
    def sampling(self) -> str:
        """What training batches hold: ``"single"`` ``(x, y)``, ``"pairs"`` or ``"triplets"``. The task sets it
        once, in :meth:`labkit.tasks.LabTask.check_compatible`; :meth:`loader` ignores it."""
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

    def similarity(self, split: str):
        """Which samples of ``split`` are alike, for pair/triplet sampling: an object of
        :mod:`labkit.data.sampling` (``ClassSimilarity``: same class label, the default of
        :class:`~labkit.data.InMemoryImageDataModule`; EgoCart: nearby frames). Data modules that give single
        samples only have none."""
        raise IncompatibleError(f"data '{self.name}' gives single (image, label) samples only, not pairs or "
                                "triplets: use an in-memory data module (labkit.data.InMemoryImageDataModule) for "
                                "pair/triplet tasks")

    def poses(self, split: str):
        """``(N, 4)`` poses ``(x, y, u, v)`` of ``split`` in :meth:`loader` order, for ``label_kind == "pose"``
        only (EgoCart); class-labelled data have none."""
        raise IncompatibleError(f"data '{self.name}' has {self.label_kind} labels, not poses: pose-based reports "
                                "need pose-labelled data (data=egocart)")

    def transform(self, x, train: bool):
        """Batch transform applied on the device after transfer (identity for modules whose workers
        already return normalized tensors)."""
        return x

    # ----- what the attached Trainer says (Lightning sets ``self.trainer`` while the module is attached; it is
    # None before and after, e.g. in evaluate.py's own loops): read here only, so no caller guesses its name
    def _training(self) -> bool:
        """Whether the attached Trainer is fitting now (training batches are augmented, others are not)."""
        return bool(self.trainer is not None and self.trainer.training)

    def _device(self) -> torch.device | None:
        """The attached Trainer's root device, or None when the module is not attached."""
        return self.trainer.strategy.root_device if self.trainer is not None else None

    def _replicas(self) -> tuple[int, int]:
        """``(world size, this process's rank)`` of the attached Trainer; ``(1, 0)`` when not attached."""
        return (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        training = self._training()
        if isinstance(batch, (PairBatch, TripletBatch)):  # transform each image tensor, keep the labels
            return batch.map_images(lambda x: self.transform(x, train=training))
        if not isinstance(batch, (list, tuple)) or len(batch) != 2:
            return batch
        x, y = batch
        return self.transform(x, train=training), y
