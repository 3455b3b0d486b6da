"""Digits (embedded), MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 as in-memory data modules.

The files are read from their genuine on-disk formats (IDX for MNIST-like sets, pickle batches for
CIFAR) by labkit itself; torchvision is only used to download them when ``download: true``.
"""
from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from labkit.core.errors import DatasetNotFoundError
from labkit.core.safe_load import CorruptFileError, safe_unpickle
from labkit.data.memory import InMemoryImageDataModule, Split, held_out_count, holdout
from labkit.schemas import data as schema


class DigitsDataModule(InMemoryImageDataModule):
    """scikit-learn's handwritten digits (1,797 real 8x8 images shipped with the library), upsampled
    to ``image_size`` (28 by default) so MNIST networks run on them unchanged. No download needed.

    ``test_size`` (count or fraction) is held out, seeded and stratified, as the test set.
    """

    name = "digits"

    def __init__(self, test_size: int | float = 0.2, **kwargs):
        DigitsDataModule.check_args(locals())
        super().__init__(**kwargs)
        self.test_size = test_size

    check_args = staticmethod(schema.Digits.check)

    DIGITS = 1797  # images in scikit-learn's load_digits

    def training_count(self) -> int:
        return self.DIGITS - held_out_count(self.test_size, self.DIGITS, "data.test_size", "digits")

    def load(self) -> tuple[Split, Split]:
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.from_numpy(d.images).float().unsqueeze(1) / 16.0  # 0..16 -> 0..1
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        y = torch.from_numpy(d.target).long()
        train_idx, test_idx = holdout(d.target, self.test_size, self.seed)
        return Split(x[train_idx], y[train_idx]), Split(x[test_idx], y[test_idx])


_REPLACE = "Replace it with a genuine copy (or delete it and run once with data.download=true)."


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:  # gzip: bad header, truncated stream, CRC error
        raise CorruptFileError(f"{path} cannot be read as a gzip-compressed IDX file ({type(e).__name__}: "
                               f"{str(e)[:200]}). {_REPLACE}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise CorruptFileError(f"{path} is not an IDX file of unsigned bytes: it starts with "
                               f"{data[:4].hex() or 'nothing'}, where an IDX file starts with 000008 and its number "
                               f"of dimensions. {_REPLACE}")
    ndim = data[3]
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise CorruptFileError(f"{path} is truncated or corrupt: its header announces {ndim} dimensions but the file "
                               f"has {len(data)} bytes. {_REPLACE}")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != math.prod(dims):
        raise CorruptFileError(f"{path} is truncated or corrupt: its header says {' x '.join(map(str, dims))} bytes "
                               f"of data, the file holds {body.size}. {_REPLACE}")
    return body.reshape(dims)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file of unsigned bytes (magic 0x0800 | ndim, big-endian dims, data): the inverse
    of the reader above, used by the tests and the benchmarks to make MNIST-format files."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with open(path, "wb") as f:
        f.write(header + array.tobytes())


class MNISTDataModule(InMemoryImageDataModule):
    """MNIST from the four IDX files in ``<data_dir>/MNIST/raw`` (torchvision's layout; ``.gz`` accepted)."""

    name = "mnist"
    folder = "MNIST"
    files = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    torchvision_class = "MNIST"
    file_classes = 10  # labels in the files are 0..9

    @property
    def raw_dir(self) -> Path:
        return Path(self.data_dir) / self.folder / "raw"

    def _find(self, name: str) -> Path | None:
        for cand in (self.raw_dir / name, self.raw_dir / (name + ".gz")):
            if cand.exists():
                return cand
        return None

    def _missing(self) -> list[str]:
        return [n for pair in self.files.values() for n in pair if self._find(n) is None]

    def sources(self) -> list[Path]:
        return [p for pair in self.files.values() for n in pair if (p := self._find(n)) is not None]

    def training_count(self) -> int | None:
        """The count in the training labels file's IDX header (None when the file is missing or its header is not
        an IDX header: :meth:`load` then says what is wrong with it)."""
        path = self._find(self.files["train"][1])
        if path is None:
            return None
        try:
            with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
                head = f.read(8)
        except (OSError, EOFError, zlib.error):
            return None
        return int.from_bytes(head[4:8], "big") if len(head) == 8 and head[:4] == bytes([0, 0, 8, 1]) else None

    def check_available(self) -> None:
        missing = self._missing()
        if missing and not self.download:
            raise DatasetNotFoundError(f"{self.name} files not found: {', '.join(missing)} missing in "
                                       f"{self.raw_dir.resolve()}. " + self._how_to())

    def prepare_data(self) -> None:
        if self.download and self._missing():
            import torchvision.datasets as tvd

            cls = getattr(tvd, self.torchvision_class)
            try:
                for train in (True, False):
                    cls(root=self.data_dir, train=train, download=True)
            except Exception as e:  # network errors come in many types
                raise DatasetNotFoundError(
                    f"downloading {self.name} into {self.raw_dir} failed ({type(e).__name__}: {e}). "
                    + self._how_to()) from None

    def _how_to(self) -> str:
        names = ", ".join(n for pair in self.files.values() for n in pair)
        return (f"Put the IDX files ({names}, optionally .gz) in {self.raw_dir.resolve()}, or run once with "
                f"data.download=true on a machine with internet access (data.data_dir sets the root folder).")

    def load(self) -> tuple[Split, Split]:
        missing = self._missing()
        if missing:
            raise DatasetNotFoundError(f"{self.name} files not found: {', '.join(missing)} missing in "
                                       f"{self.raw_dir.resolve()}. " + self._how_to())
        out = []
        for split in ("train", "test"):
            img_file, lab_file = (self._find(n) for n in self.files[split])
            img, lab = _read_idx(img_file), _read_idx(lab_file)
            if img.ndim != 3 or lab.ndim != 1 or len(img) != len(lab):
                raise CorruptFileError(f"{self.name} {split}: the images in {img_file} (shape {img.shape}) and the "
                                       f"labels in {lab_file} (shape {lab.shape}) do not match: expected N images "
                                       f"and N labels. {_REPLACE}")
            if len(lab) and int(lab.max()) >= self.file_classes:
                raise CorruptFileError(f"{lab_file} is corrupt: it holds the label {int(lab.max())}, but {self.name} "
                                       f"labels are 0..{self.file_classes - 1}. {_REPLACE}")
            out.append(Split(torch.from_numpy(img.copy()).unsqueeze(1), torch.from_numpy(lab.astype(np.int64))))
        return out[0], out[1]


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST, same IDX layout as MNIST under ``<data_dir>/FashionMNIST/raw``."""

    name = "fashion_mnist"
    folder = "FashionMNIST"
    torchvision_class = "FashionMNIST"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                        "Bag", "Ankle boot"][: self.num_classes]


class CIFAR10DataModule(InMemoryImageDataModule):
    """CIFAR-10 from the python pickle batches in ``<data_dir>/cifar-10-batches-py`` (torchvision's layout)."""

    name = "cifar10"
    folder = "cifar-10-batches-py"
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    test_files = ["test_batch"]
    meta = ("batches.meta", "label_names")
    label_key = "labels"
    torchvision_class = "CIFAR10"
    file_classes = 10

    @property
    def root(self) -> Path:
        return Path(self.data_dir) / self.folder

    def _missing(self) -> list[str]:
        return [f for f in self.train_files + self.test_files if not (self.root / f).exists()]

    def sources(self) -> list[Path]:
        names = [*self.train_files, *self.test_files, self.meta[0]]
        return [self.root / n for n in names if (self.root / n).exists()]

    def check_available(self) -> None:
        missing = self._missing()
        if missing and not self.download:
            raise DatasetNotFoundError(f"{self.name} files not found: {', '.join(missing)} missing in "
                                       f"{self.root.resolve()}. " + self._how_to())

    def _how_to(self) -> str:
        return (f"Put the extracted python-version batches ({', '.join(self.train_files + self.test_files)}, "
                f"{self.meta[0]}) in {self.root.resolve()}, or run once with data.download=true on a machine with "
                f"internet access (data.data_dir sets the root folder).")

    def prepare_data(self) -> None:
        if self.download and self._missing():
            import torchvision.datasets as tvd

            try:
                getattr(tvd, self.torchvision_class)(root=self.data_dir, train=True, download=True)
            except Exception as e:
                raise DatasetNotFoundError(f"downloading {self.name} into {self.root} failed "
                                           f"({type(e).__name__}: {e}). " + self._how_to()) from None

    def _read(self, names: list[str]) -> Split:
        xs, ys = [], []
        for n in names:
            path = self.root / n
            entry = safe_unpickle(path, f"a {self.name} batch (a python-version pickle)")
            if not isinstance(entry, dict) or "data" not in entry or self.label_key not in entry:
                raise CorruptFileError(f"{path} is not a {self.name} batch: it lacks 'data' or '{self.label_key}'. "
                                       + _REPLACE)
            try:
                x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                y = np.asarray(entry[self.label_key], dtype=np.int64).reshape(-1)
            except (ValueError, TypeError) as e:
                raise CorruptFileError(f"{path} is not a {self.name} batch: its 'data' is not rows of 3072 bytes or "
                                       f"its '{self.label_key}' not integers ({e}). {_REPLACE}") from None
            if len(x) != len(y):
                raise CorruptFileError(f"{path} is corrupt: {len(x)} images but {len(y)} labels. {_REPLACE}")
            if len(y) and (y.min() < 0 or y.max() >= self.file_classes):
                raise CorruptFileError(f"{path} is corrupt: its labels go from {y.min()} to {y.max()}, but {self.name} "
                                       f"labels are 0..{self.file_classes - 1}. {_REPLACE}")
            xs.append(x)
            ys.append(y)
        return Split(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))

    def load(self) -> tuple[Split, Split]:
        missing = self._missing()
        if missing:
            raise DatasetNotFoundError(f"{self.name} files not found: {', '.join(missing)} missing in "
                                       f"{self.root.resolve()}. " + self._how_to())
        meta = self.root / self.meta[0]
        if meta.exists():
            entry = safe_unpickle(meta, f"the {self.name} meta file (a python-version pickle)")
            names = entry.get(self.meta[1]) if isinstance(entry, dict) else None
            if names:
                self.classes = list(names)
        return self._read(self.train_files), self._read(self.test_files)


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 (fine labels) from ``<data_dir>/cifar-100-python`` (``train``, ``test``, ``meta``)."""

    name = "cifar100"
    folder = "cifar-100-python"
    train_files = ["train"]
    test_files = ["test"]
    meta = ("meta", "fine_label_names")
    label_key = "fine_labels"
    torchvision_class = "CIFAR100"
    file_classes = 100
