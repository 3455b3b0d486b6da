"""Image files on disk, one folder per class: any such dataset, and Caltech101 as in note 000.

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
"""
from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from labkit.data.base import LabDataModule
from labkit.data.memory import holdout
from labkit.errors import ConfigError, DatasetNotFoundError, IncompatibleError, LabkitError
from labkit.images import IMAGENET_MEAN, IMAGENET_STD, shorter_side_size

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
LABKIT_DIR = ".labkit"
VERIFIED_FILE = "verified.csv"
SPLITS = ("train", "val", "test")
ON_CORRUPT = ("skip", "error")


class CorruptImagesError(LabkitError, ValueError):
    """Some image files cannot be decoded (and ``on_corrupt: error`` was asked for)."""


# ----- where labkit writes ----------------------------------------------------------------------------
def default_cache_root() -> Path:
    """labkit's cache folder when no config gives one: ``$LABKIT_CACHE_DIR``, else ``~/.cache/labkit``."""
    return Path(os.environ.get("LABKIT_CACHE_DIR") or Path.home() / ".cache" / "labkit").expanduser()


def dataset_cache_dir(cache_root: str | os.PathLike | None, dataset_root: str | os.PathLike) -> Path:
    """``<cache_root>/<folder name>-<hash>``: labkit's files about the dataset at ``dataset_root`` (splits, checks,
    resized copies), one folder per dataset location (the hash is of its absolute path)."""
    resolved = Path(dataset_root).expanduser().resolve()
    digest = hashlib.sha1(str(resolved).encode("utf-8", "surrogateescape")).hexdigest()[:10]
    root = Path(str(cache_root)).expanduser() if cache_root else default_cache_root()
    return root / f"{resolved.name or 'root'}-{digest}"


# ----- small file helpers -------------------------------------------------------------------------
def _write_csv(path: Path, header: Sequence[str], rows) -> None:
    from labkit.runs import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _read_table(path: Path, columns: Sequence[str], fix: str) -> list[dict[str, str]]:
    """The rows of a CSV file labkit saved, or a :class:`CorruptFileError` naming it (edited, truncated...)."""
    from labkit.safe_load import CorruptFileError

    try:
        rows = _read_csv(path)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CorruptFileError(f"{path} cannot be read ({type(e).__name__}: {e}); {fix}") from None
    if any(any(r.get(c) is None for c in columns) for r in rows):
        raise CorruptFileError(f"{path} is corrupt: every row needs the columns {', '.join(columns)}; {fix}")
    return rows


def check_image(path: Path) -> str:
    """'' when ``path`` is a readable image, else the reason (verify() checks the structure, load() decodes)."""
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            im.load()
        return ""
    except Exception as e:  # PIL raises many types for bad files
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]


def scan_class_folders(root: Path, exclude: Sequence[str] = ()) -> tuple[list[str], list[tuple[str, int]]]:
    """Sorted class folder names and ``(relative path, label)`` of every image file, sorted by path.

    Hidden entries (``.labkit``, ``.DS_Store``...) and the ``exclude`` folders are ignored.
    """
    classes = sorted(e.name for e in os.scandir(root)
                     if e.is_dir() and not e.name.startswith(".") and e.name not in set(exclude))
    samples = []
    for label, cls in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(root / cls):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = Path(dirpath).relative_to(root).as_posix()
            for fn in sorted(filenames):
                if not fn.startswith(".") and fn.lower().endswith(IMAGE_EXTENSIONS):
                    samples.append((f"{rel_dir}/{fn}", label))
    samples.sort()
    return classes, samples


def resize_shorter_side(img: Image.Image, size: int) -> Image.Image:
    """What torchvision's ``Resize(size)`` does to a PIL image (same output size rule and filter)."""
    w, h = img.size
    new_h, new_w = shorter_side_size(h, w, size)
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), Image.Resampling.BILINEAR)


def _fractions(split) -> list[float] | None:
    """``split`` as three positive floats summing to 1, else None."""
    if isinstance(split, (str, bytes)) or not hasattr(split, "__iter__"):
        return None
    try:
        out = [float(f) for f in split]
    except (TypeError, ValueError):
        return None
    if len(out) != 3 or any(f <= 0 for f in out) or abs(sum(out) - 1.0) > 1e-6:
        return None
    return out


# ----- dataset --------------------------------------------------------------------------------------
class ImageFileDataset(Dataset):
    """``(transform(image), label)`` for ``(relative path, label)`` samples under ``root``.

    Images are converted to ``mode`` ("RGB": grey and palette images become 3-channel; "L": grey).
    With ``cache_dir`` and ``resize``, the image resized so its shorter side is ``resize`` is kept as
    a PNG there (written on first use, refreshed when the source file is newer).
    """

    def __init__(self, root: Path, samples: list[tuple[str, int]], transform, mode: str = "RGB",
                 cache_dir: Path | None = None, resize: int | None = None):
        self.root = Path(root)
        self.samples = list(samples)
        self.transform = transform
        self.mode = mode
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.resize = resize

    def __len__(self) -> int:
        return len(self.samples)

    def _open(self, rel: str) -> Image.Image:
        src = self.root / rel
        if self.cache_dir is None or not self.resize:
            with Image.open(src) as im:
                return im.convert(self.mode)
        cached = self.cache_dir / (rel + ".png")
        try:
            if cached.stat().st_mtime_ns >= src.stat().st_mtime_ns:
                with Image.open(cached) as im:
                    return im.convert(self.mode)
        except (OSError, ValueError):  # not cached yet (or a bad cache file: rewrite it)
            pass
        with Image.open(src) as im:
            img = im.convert(self.mode)
        img = resize_shorter_side(img, self.resize)
        from labkit.runs import temporary_path

        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_path(cached)
        try:
            img.save(tmp, format="PNG", compress_level=1)
            os.replace(tmp, cached)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return img

    def __getitem__(self, i: int):
        rel, label = self.samples[i]
        img = self._open(rel)
        return (self.transform(img) if self.transform is not None else img), label


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
                 cache_root: str | None = None, **kwargs):
        kwargs.setdefault("channels", 3)
        kwargs.setdefault("image_size", 224)
        channels = kwargs["channels"]
        if channels not in (1, 3):
            raise ConfigError(f"data.channels={channels!r} is invalid for image files: use 3 (RGB; grey images "
                              "are converted) or 1 (greyscale)")
        if kwargs.get("mean") is None:
            kwargs["mean"] = list(IMAGENET_MEAN) if channels == 3 else [float(np.mean(IMAGENET_MEAN))]
        if kwargs.get("std") is None:
            kwargs["std"] = list(IMAGENET_STD) if channels == 3 else [float(np.mean(IMAGENET_STD))]
        super().__init__(**kwargs)
        fractions = _fractions(split)
        if fractions is None:
            raise ConfigError(f"data.split={split!r} is invalid: give three fractions > 0 for train, val and test "
                              "that sum to 1, e.g. [0.6, 0.1, 0.3]")
        if isinstance(resize, bool) or not isinstance(resize, int) or resize < self.image_size:
            raise ConfigError(f"data.resize={resize!r} is invalid: it must be an integer >= data.image_size="
                              f"{self.image_size} (the crop is taken from the resized image)")
        if on_corrupt not in ON_CORRUPT:
            raise ConfigError(f"data.on_corrupt={on_corrupt!r} is invalid: use skip (warn and leave the files out) "
                              "or error (stop)")
        if not 0.0 <= hflip <= 1.0:
            raise ConfigError(f"data.hflip={hflip} is invalid: it is a probability in [0, 1]")
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

    # ----- locating the files -------------------------------------------------------------------
    def find_root(self) -> Path | None:
        """The folder of class folders, or None when it does not exist."""
        if self.root is None:
            raise ConfigError("data.root is not set: give the folder that holds one sub-folder per class")
        p = Path(str(self.root)).expanduser()
        return p if p.is_dir() else None

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
        name = f"splits_seed{self.seed}"
        if [round(f, 6) for f in self.split] != [0.6, 0.1, 0.3]:
            name += "_" + "-".join(f"{f:g}" for f in self.split)
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
        from labkit.runs import clean_stale_temporaries

        if self.cache_resized:  # resized copies whose writer was killed
            clean_stale_temporaries(self.labkit_dir / f"cache_{self.resize}", recursive=True)
        self.corrupt = self._verify(root, [p for p, _ in samples])
        self._report_corrupt()
        good = [s for s in samples if s[0] not in self.corrupt]
        self._check_no_empty_class(root, classes, [label for _, label in good], "readable images")
        self.samples = self._load_or_make_split(good, classes)
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

    def _verify(self, root: Path, paths: list[str]) -> dict[str, str]:
        """``{relative path: reason}`` of unreadable images; verdicts cached by size and modification time."""
        cache_file = self.labkit_dir / VERIFIED_FILE
        known: dict[str, tuple[str, str, str]] = {}
        if cache_file.exists():
            try:
                known = {r["path"]: (r["size"], r["mtime_ns"], r["error"]) for r in _read_csv(cache_file)}
            except (OSError, KeyError, csv.Error):
                known = {}
        stats = {}
        todo = []
        for p in paths:
            st = (root / p).stat()
            stats[p] = (str(st.st_size), str(st.st_mtime_ns))
            k = known.get(p)
            if k is None or k[:2] != stats[p]:
                todo.append(p)
        todo_set = set(todo)
        verdicts = {p: known[p][2] for p in paths if p not in todo_set}
        if todo:
            log.info("%s: checking %d image files (once; verdicts cached in %s)", self.name, len(todo), cache_file)
            with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2))) as pool:
                for p, err in zip(todo, pool.map(lambda q: check_image(root / q), todo)):
                    verdicts[p] = err
            try:
                _write_csv(cache_file, ["path", "size", "mtime_ns", "error"],
                           [(p, *stats[p], verdicts[p]) for p in paths])
            except OSError as e:
                log.warning("%s: cannot save the image check cache %s (%s); set data.work_dir to a writable "
                            "folder to make later runs faster", self.name, cache_file, e.strerror)
        return {p: verdicts[p] for p in paths if verdicts[p]}

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

    def _load_or_make_split(self, good: list[tuple[str, int]], classes: list[str]) -> dict[str, list]:
        d = self.split_dir
        files = {s: d / f"{s}.csv" for s in SPLITS}
        if all(f.exists() for f in files.values()):
            return self._read_split(d, files, good, classes)
        y = np.array([label for _, label in good])
        n = len(good)
        n_test, n_val = int(round(self.split[2] * n)), int(round(self.split[1] * n))
        if n - n_test - n_val < 1 or n_test < 1 or n_val < 1:
            raise IncompatibleError(f"{self.name}: {n} readable images are too few for the split {self.split}")
        rest, test = holdout(y, n_test, self.seed)
        keep, val = holdout(y[rest], n_val, self.seed)
        parts = {"train": rest[keep], "val": rest[val], "test": test}
        out = {s: [good[i] for i in sorted(idx)] for s, idx in parts.items()}
        try:
            for s in SPLITS:
                _write_csv(files[s], ["path", "label"], out[s])
            _write_csv(d / "classes.csv", ["label", "class"], list(enumerate(classes)))
            _write_csv(d / "corrupt.csv", ["path", "error"], sorted(self.corrupt.items()))
        except OSError as e:
            raise ConfigError(f"{self.name}: cannot write the split files to {d} ({e.strerror}); set data.work_dir "
                              "to a writable folder") from None
        log.info("%s: new seeded split (seed %d, %s) saved in %s", self.name, self.seed, self.split, d)
        return out

    def _read_split(self, d: Path, files: dict[str, Path], good, classes) -> dict[str, list]:
        fix = f"delete {d} to make a new split"
        saved_classes = d / "classes.csv"
        if saved_classes.exists():
            names = [r["class"] for r in _read_table(saved_classes, ("label", "class"), fix)]
            if names != classes:
                raise IncompatibleError(f"{self.name}: the class folders changed since the split in {d} was made "
                                        f"(saved {len(names)}, now {len(classes)}); delete {d} to make a new split")
        good_set = dict(good)
        out, missing, dropped = {}, [], []
        for s in SPLITS:
            rows = []
            for r in _read_table(files[s], ("path", "label"), fix):
                p, label = r["path"], r["label"]
                if not label.isdigit() or int(label) >= len(classes):
                    from labkit.safe_load import CorruptFileError

                    raise CorruptFileError(f"{files[s]} is corrupt: label {label!r} of {p} is not one of 0..."
                                           f"{len(classes) - 1}; {fix}")
                label = int(label)
                if p in self.corrupt:
                    dropped.append(p)
                elif p not in good_set:
                    missing.append(p)
                else:
                    rows.append((p, label))
            out[s] = rows
        if missing:
            raise IncompatibleError(f"{self.name}: {len(missing)} image(s) listed in the split files of {d} no longer "
                                    f"exist (e.g. {', '.join(missing[:5])}); delete {d} to make a new split")
        listed = {p for s in SPLITS for p, _ in out[s]} | set(dropped)
        extra = [p for p in good_set if p not in listed]
        if extra:
            log.warning("%s: %d image(s) added after the split in %s was made are not used (e.g. %s); delete that "
                        "folder to re-split", self.name, len(extra), d, ", ".join(extra[:5]))
        log.info("%s: reusing the split in %s", self.name, d)
        return out

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
        trainer = getattr(self, "_trainer", None)
        if trainer is not None:
            return trainer.strategy.root_device.type == "cuda"
        return torch.cuda.is_available()



CALTECH101_PAGE = "https://data.caltech.edu/records/mzrjq-6wc02"


class Caltech101DataModule(ImageFolderDataModule):
    """Caltech101 (note 000): 101 object categories, ``BACKGROUND_Google`` excluded, grey images made RGB.

    Looks for ``<data_dir>/caltech101/101_ObjectCategories`` (torchvision's layout), then
    ``<data_dir>/101_ObjectCategories``; ``root`` may name either that folder or a folder holding it.
    ``download: true`` tries torchvision's ``Caltech101(download=True)`` (Google Drive, needs ``gdown``,
    often rate-limited).
    """

    name = "caltech101"
    default_exclude = ("BACKGROUND_Google",)
    folder = "101_ObjectCategories"

    def __init__(self, download: bool = False, **kwargs):
        kwargs.setdefault("num_classes", 101)
        super().__init__(**kwargs)
        self.download = download

    def _candidates(self) -> list[Path]:
        if self.root:
            r = Path(str(self.root)).expanduser()
            return [r / "caltech101" / self.folder, r / self.folder, r]
        d = Path(self.data_dir).expanduser()
        return [d / "caltech101" / self.folder, d / "Caltech101" / self.folder, d / self.folder]

    def find_root(self) -> Path | None:
        for c in self._candidates():
            if c.is_dir() and c.name == self.folder:
                return c
        if self.root:  # any folder of category folders given explicitly (e.g. the notes' Caltech101/images)
            r = Path(str(self.root)).expanduser()
            if r.is_dir() and not (r / "caltech101").exists() and any(
                    e.is_dir() and not e.name.startswith(".") for e in os.scandir(r)):
                return r
        return None

    def _not_found(self) -> DatasetNotFoundError:
        cands = self._candidates()
        archives = [p for c in cands for p in (c.parent / f"{self.folder}.tar.gz",) if p.exists()]
        hint = (f" Found the archive {archives[0]}: extract it there (tar xzf {archives[0].name})." if archives else "")
        return DatasetNotFoundError(
            f"caltech101 not found: looked for {', '.join(str(c.resolve()) for c in cands)}.{hint} Expected layout: "
            f"<data_dir>/caltech101/{self.folder}/<category>/image_0001.jpg (102 folders; BACKGROUND_Google is left "
            f"out). Get caltech-101.zip from the official page {CALTECH101_PAGE}, unzip it and extract "
            f"{self.folder}.tar.gz into <data_dir>/caltech101/, or run once with data.download=true (torchvision's "
            "Google Drive download, needs the gdown package and often fails upstream). data.data_dir or data.root "
            "sets where to look.")

    def prepare_data(self) -> None:
        if not self.download or self.find_root() is not None:
            return
        import torchvision.datasets as tvd

        try:
            tvd.Caltech101(root=str(self.root or self.data_dir), target_type="category", download=True)
        except Exception as e:  # network, gdown or archive errors
            raise DatasetNotFoundError(f"downloading caltech101 failed ({type(e).__name__}: {e}). "
                                       + str(self._not_found())) from None
