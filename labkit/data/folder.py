"""Image files on disk, one folder per class: :class:`ImageFolderDataModule` (Caltech101 is :mod:`labkit.data.caltech`).

Layout: ``<root>/<class name>/<image file>``; classes are the sorted folder names (labels 0..K-1).
At setup the module

1. checks that every class folder holds images (an empty one stops the run, naming it);
2. checks every image once (open + verify + decode) and caches the verdicts in
   ``<work dir>/verified.csv`` (later runs only check new or changed files); unreadable files are
   skipped with a warning listing them (``on_corrupt: skip``) or stop the run (``on_corrupt: error``);
3. makes a seeded, stratified train/val/test split (60/10/30 by default, note 000) and saves it as
   ``train.csv``, ``val.csv``, ``test.csv`` (columns ``path,label``, paths relative to ``root``) plus
   ``classes.csv`` in ``<work dir>/splits_seed<seed>/``; the next run with the same seed and
   fractions reuses those files, so the test set never changes.

The work dir is ``work_dir`` when set, else ``<cache_root>/<folder name>-<hash of its absolute path>``
(``cache_root`` is ``paths.cache_dir`` in the configs, ``$LABKIT_CACHE_DIR`` or ``~/.cache/labkit`` otherwise):
labkit never writes into the dataset folder, which may be shared or read-only. A split saved by older labkit
versions in ``<root>/.labkit/splits_seed<seed>/`` is still found and reused.

Workers decode and transform the images (the notes' ImageNet pipeline: training Resize(resize) +
RandomCrop(image_size) + RandomHorizontalFlip, evaluation Resize(resize) + CenterCrop(image_size),
then ImageNet normalization), so :meth:`transform` is the identity. ``cache_resized: true`` stores
each image once with its shorter side already ``resize`` pixels (PNG under ``<work dir>/cache_<resize>/``)
so later epochs do not decode full-size JPEGs again.

The image files and the check cache are :mod:`labkit.data.files`; the saved split is :mod:`labkit.data.splits`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from labkit.core.errors import ConfigError, DatasetNotFoundError, IncompatibleError
from labkit.core.images import IMAGENET_MEAN, IMAGENET_STD
from labkit.data.base import LabDataModule
from labkit.data.files import (
    IMAGE_EXTENSIONS,
    VERIFIED_FILE,
    CorruptImagesError,
    ImageFileDataset,
    dataset_cache_dir,
    scan_class_folders,
    verify_images,
)
from labkit.data.splits import SPLITS, load_or_make_split, split_dir_name
from labkit.schemas import data as schema
from labkit.schemas.data import parse_fractions

log = logging.getLogger(__name__)

LABKIT_DIR = ".labkit"  # where older labkit versions saved splits, inside the dataset folder (still read)


# ----- data modules ---------------------------------------------------------------------------------
class ImageFolderDataModule(LabDataModule):
    """Any class-per-folder image dataset (``<root>/<class>/<image>``) with a saved seeded split.

    Args:
        root: folder holding one sub-folder per class.
        split: train/val/test fractions (summing to 1), stratified by class and seeded with ``seed``.
        resize: the shorter side is resized to this before cropping (note 000: 256).
        image_size: side of the square crop fed to the network (note 000: 224).
        augment: random crop + horizontal flip in training (else the evaluation centre crop).
        hflip: probability of the horizontal flip.
        exclude: class folder names to ignore.
        on_corrupt: ``skip`` unreadable files with a warning listing them, or ``error``.
        cache_resized: keep resized copies of the images (PNG) to avoid decoding large files every epoch.
        work_dir: where splits, verdicts and the cache go (null: a folder for this dataset under ``cache_root``).
        cache_root: labkit's cache folder (the configs pass ``paths.cache_dir``; null: ``$LABKIT_CACHE_DIR`` or
            ``~/.cache/labkit``).
        mean, std: normalization (null: ImageNet's, for pretrained networks).
    """

    name = "image_folder"
    default_exclude: tuple[str, ...] = ()

    def __init__(self, root: str | None = None, split: Sequence[float] = (0.6, 0.1, 0.3), resize: int = 256,
                 augment: bool = True, hflip: float = 0.5, exclude: Sequence[str] | None = None,
                 on_corrupt: str = "skip", cache_resized: bool = False, work_dir: str | None = None,
                 cache_root: str | None = None, channels: int = 3, image_size: int = 224, **kwargs):
        kwargs.update(channels=channels, image_size=image_size)
        ImageFolderDataModule.check_args(dict(locals(), **kwargs))
        channels = kwargs["channels"]
        if kwargs.get("mean") is None:
            kwargs["mean"] = list(IMAGENET_MEAN) if channels == 3 else [float(np.mean(IMAGENET_MEAN))]
        if kwargs.get("std") is None:
            kwargs["std"] = list(IMAGENET_STD) if channels == 3 else [float(np.mean(IMAGENET_STD))]
        super().__init__(**kwargs)
        fractions = parse_fractions(split)
        self.root = root
        self.split = fractions
        self.resize = resize
        self.augment = augment
        self.hflip = hflip
        self.exclude = list(self.default_exclude if exclude is None else exclude)
        self.on_corrupt = on_corrupt
        self.cache_resized = cache_resized
        self.work_dir = work_dir
        self.cache_root = cache_root
        self.samples: dict[str, list[tuple[str, int]]] = {}
        self.corrupt: dict[str, str] = {}
        self.images_root: Path | None = None
        self._datasets: dict[tuple[str, bool], ImageFileDataset] = {}

    # the rules of this class's own arguments (run by __init__ and, on the config, by the pre-flight)
    check_args = staticmethod(schema.ImageFolder.check)

    # ----- locating the files -------------------------------------------------------------------
    def sources(self) -> list[Path]:
        root = self.find_root()
        return [root] if root is not None else []

    def find_root(self) -> Path | None:
        """The folder of class folders, or None when it does not exist."""
        if self.root is None:
            raise ConfigError("data.root is not set: give the folder that holds one sub-folder per class")
        p = Path(str(self.root)).expanduser()
        return p if p.is_dir() else None

    def check_available(self) -> None:
        if self.find_root() is None:
            raise self._not_found()

    def _not_found(self) -> DatasetNotFoundError:
        return DatasetNotFoundError(
            f"{self.name}: image folder {Path(str(self.root)).expanduser().resolve()} not found. Expected layout: "
            "<root>/<class name>/<image>.jpg (one sub-folder per class, any of "
            f"{', '.join(IMAGE_EXTENSIONS)}); set data.root to that folder.")

    @property
    def labkit_dir(self) -> Path:
        """Where labkit writes about this dataset: ``work_dir``, else its folder under the cache root."""
        assert self.images_root is not None
        if self.work_dir:
            return Path(str(self.work_dir)).expanduser()
        return dataset_cache_dir(self.cache_root, self.images_root)

    @property
    def split_dir(self) -> Path:
        name = split_dir_name(self.seed, self.split)
        assert self.images_root is not None
        legacy = self.images_root / LABKIT_DIR / name  # where older labkit versions saved it: same test set
        if not self.work_dir and all((legacy / f"{s}.csv").is_file() for s in SPLITS):
            return legacy
        return self.labkit_dir / name

    # ----- Lightning hooks ----------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.samples:
            return
        if self.sampling != "single":
            raise IncompatibleError(f"{self.name} gives single (image, label) samples, not {self.sampling}: use an "
                                    "in-memory data module for pair/triplet tasks")
        root = self.find_root()
        if root is None:
            raise self._not_found()
        self.images_root = root
        classes, samples = scan_class_folders(root, self.exclude)
        if samples:
            self._check_no_empty_class(root, classes, [label for _, label in samples], "image files")
        if not samples:
            raise DatasetNotFoundError(f"{self.name}: no image files in the class folders of {root.resolve()} "
                                       f"(found folders: {', '.join(classes) or 'none'}). Expected layout: "
                                       "<root>/<class name>/<image>.jpg")
        if len(classes) != self.num_classes:
            raise IncompatibleError(
                f"{self.name}: {root} has {len(classes)} class folders ({', '.join(classes[:10])}"
                f"{', ...' if len(classes) > 10 else ''}) but data.num_classes={self.num_classes}; "
                f"set data.num_classes={len(classes)}")
        self.classes = classes
        from labkit.core.files import clean_stale_temporaries

        if self.cache_resized:  # resized copies whose writer was killed
            clean_stale_temporaries(self.labkit_dir / f"cache_{self.resize}", recursive=True)
        self.corrupt = verify_images(root, [p for p, _ in samples], self.labkit_dir / VERIFIED_FILE, self.name)
        self._report_corrupt()
        good = [s for s in samples if s[0] not in self.corrupt]
        self._check_no_empty_class(root, classes, [label for _, label in good], "readable images")
        self.samples = load_or_make_split(self.split_dir, good, classes, self.split, self.seed, self.corrupt,
                                          self.name)
        self._datasets = {}
        log.info("%s: %d classes, %d train / %d val / %d test images (split files in %s)", self.name,
                 len(classes), *(len(self.samples[s]) for s in SPLITS), self.split_dir)

    def _check_no_empty_class(self, root: Path, classes: list[str], labels: list[int], what: str) -> None:
        """Every class folder must give samples: an empty one would silently train on fewer classes."""
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
        empty = [c for c, n in zip(classes, counts) if n == 0]
        if not empty:
            return
        folders = ", ".join(str(root / c) for c in empty[:10]) + (", ..." if len(empty) > 10 else "")
        rest = len(classes) - len(empty)
        raise IncompatibleError(
            f"{self.name}: {len(empty)} class folder(s) hold no {what}: {folders}. With them, {root} has "
            f"{len(classes)} class folders (data.num_classes={self.num_classes}) but only {rest} classes to learn. "
            f"Add images ({', '.join(IMAGE_EXTENSIONS[:3])}, ...) to {'it' if len(empty) == 1 else 'them'}, or "
            f"leave {'it' if len(empty) == 1 else 'them'} out with data.exclude=[{','.join(self.exclude + empty)}] "
            f"and "
            f"data.num_classes={rest}.")

    def _report_corrupt(self) -> None:
        if not self.corrupt:
            return
        assert self.images_root is not None
        lines = [f"  {self.images_root / p}: {why}" for p, why in sorted(self.corrupt.items())]
        shown = "\n".join(lines[:50]) + (f"\n  ... and {len(lines) - 50} more" if len(lines) > 50 else "")
        if self.on_corrupt == "error":
            raise CorruptImagesError(f"{self.name}: {len(lines)} image file(s) cannot be read:\n{shown}\n"
                                     "Delete or replace them, or set data.on_corrupt=skip to leave them out.")
        log.warning("%s: leaving out %d unreadable image file(s) (data.on_corrupt=skip):\n%s", self.name,
                    len(lines), shown)

    # ----- transforms and loaders ---------------------------------------------------------------
    def image_transform(self, train: bool):
        """The notes' pipeline: Resize(resize) + Random/CenterCrop(image_size) [+ flip] + ToTensor + Normalize."""
        from torchvision import transforms as T

        if train and self.augment:
            ops = [T.Resize(self.resize), T.RandomCrop(self.image_size)]
            if self.hflip:
                ops.append(T.RandomHorizontalFlip(self.hflip))
        else:
            ops = [T.Resize(self.resize), T.CenterCrop(self.image_size)]
        return T.Compose(ops + [T.ToTensor(), T.Normalize(self.mean, self.std)])

    def dataset(self, split: str, train: bool = False) -> ImageFileDataset:
        if split not in SPLITS:
            raise ConfigError(f"split={split!r} is invalid: choose train, val or test")
        if not self.samples:
            self.setup()
        key = (split, train)
        if key not in self._datasets:
            cache = self.labkit_dir / f"cache_{self.resize}" if self.cache_resized else None
            self._datasets[key] = ImageFileDataset(self.images_root, self.samples[split], self.image_transform(train),
                                                   "RGB" if self.channels == 3 else "L", cache, self.resize)
        return self._datasets[key]

    def _loader(self, split: str, train: bool, evaluation: bool = False) -> DataLoader:
        ds = self.dataset(split, train)
        bs = self.batch_size if train else self.eval_batch_size
        workers = self.num_workers
        generator = torch.Generator().manual_seed(self.seed) if train else None
        # a last training batch of one image breaks BatchNorm: drop it
        drop_last = train and len(ds) > bs and len(ds) % bs == 1
        return DataLoader(ds, batch_size=bs, shuffle=train, generator=generator, num_workers=workers,
                          persistent_workers=not evaluation and workers > 0, pin_memory=self._pin_memory(),
                          drop_last=drop_last)

    def _pin_memory(self) -> bool:
        device = self._device()
        return device.type == "cuda" if device is not None else torch.cuda.is_available()


def __getattr__(name: str):
    # saved configs name labkit.data.folder.Caltech101DataModule (labkit._compat says where it lives now)
    from labkit import _compat

    return _compat.moved_attribute(__name__, name)
