"""EgoCart (note 002): frames from a shopping cart in a supermarket, labelled with the cart's pose.

Layout (the official zip extracted into ``<data_dir>/egocart``, or ``data_dir`` itself)::

    train_set/train_RGB/<image files>      train_set/train_set.txt
    test_set/test_RGB/<image files>        test_set/test_set.txt

Each label line holds whitespace-separated columns: 0 the image file name (in ``*_RGB``), 1 the depth image
name (unused), 2-3 the position x, y in metres, 4-5 the heading u, v (re-normalized to unit length here). The
``*_depth`` folders are not used.

Labels are poses ``(x, y, u, v)`` (``label_kind = "pose"``): :meth:`EgoCartDataModule.loader` yields
``(images, poses)`` and :meth:`EgoCartDataModule.poses` returns them as an array. Two frames are *similar*
when they are closer than ``similar_distance`` (0.3 m) and their headings differ by less than
``similar_angle`` (45 degrees); the neighbour lists come from a radius search on (x, y) (a k-d tree, never an
N x N matrix) followed by the angle test, and feed :class:`labkit.data.sampling.NeighbourSimilarity` for
pairs and triplets.

Images are resized like torchvision's ``Resize(image_size)`` (shorter side = ``image_size``, aspect kept;
``square: true`` gives ``image_size x image_size``) and normalized with ImageNet's statistics, as in the
note. The dataset is 2.5 GB of JPEGs: with ``cache_resized: true`` the resized uint8 images of each split
are decoded once into ``<cache>/egocart_<split>_<H>x<W>_<hash>.npy`` and then memory-mapped, so later epochs and
runs skip JPEG decoding. ``<cache>`` is ``cache_dir`` when set, else labkit's folder for this dataset under
``cache_root`` (``paths.cache_dir`` in the configs): nothing is written into the dataset folder. Caches made by
older labkit versions in ``<root>/.labkit_cache`` are still used.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

from labkit.core.errors import DatasetNotFoundError
from labkit.core.images import IMAGENET_MEAN, IMAGENET_STD, shorter_side_size
from labkit.core.safe_load import CorruptFileError
from labkit.data.files import dataset_cache_dir
from labkit.data.memory import InMemoryImageDataModule, Split, holdout
from labkit.data.sampling import NeighbourSimilarity
from labkit.schemas import data as schema

log = logging.getLogger(__name__)

SPLITS = {"train": ("train_set", "train_RGB", "train_set.txt"), "test": ("test_set", "test_RGB", "test_set.txt")}


# ----- labels and similarity ---------------------------------------------------------------------
def read_labels(path: str | Path) -> tuple[list[str], np.ndarray]:
    """(image names, poses float32 (N, 4) = x, y, u, v with (u, v) of unit length) of one label file.

    A malformed line raises :class:`~labkit.core.safe_load.CorruptFileError` (a ``ValueError``) naming the file and the
    line number.
    """
    path = Path(path)
    names, rows = [], []
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise CorruptFileError(f"{path} is not a text file of labels ({e}): expected one line per image with 6 "
                               "whitespace-separated columns (image, depth image, x, y, u, v)") from None
    for lineno, line in enumerate(text.split("\n"), 1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path}, line {lineno}"
        if len(parts) < 6:
            raise CorruptFileError(f"{where}: expected 6 whitespace-separated columns (image, depth image, x, y, "
                                   f"u, v), found {len(parts)}: {line.strip()!r}")
        try:
            vals = [float(v) for v in parts[2:6]]
        except ValueError:
            raise CorruptFileError(f"{where}: columns 3-6 (x, y, u, v) must be numbers: {line.strip()!r}") from None
        if not np.all(np.isfinite(vals)) or vals[2] == 0 and vals[3] == 0:
            raise CorruptFileError(f"{where}: x, y, u, v must be finite and (u, v) non-zero: {line.strip()!r}")
        names.append(parts[0])
        rows.append(vals)
    if not rows:
        raise CorruptFileError(f"{path} holds no label lines: expected one line per image with 6 "
                               "whitespace-separated columns (image, depth image, x, y, u, v)")
    poses = np.asarray(rows, dtype=np.float64)
    poses[:, 2:4] /= np.linalg.norm(poses[:, 2:4], axis=1, keepdims=True)
    return names, poses.astype(np.float32)


def heading_difference(uv_a: np.ndarray, uv_b: np.ndarray) -> np.ndarray:
    """Angle in degrees between unit headings (rows), ``arccos`` of their dot product clipped to [-1, 1]."""
    return np.degrees(np.arccos(np.clip((uv_a * uv_b).sum(-1), -1.0, 1.0)))


def similar_pairs(poses: np.ndarray, max_distance: float = 0.3,
                  max_angle: float = 45.0) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``i < j`` whose positions are closer than ``max_distance`` (strictly) and whose headings differ
    by less than ``max_angle`` degrees: a k-d tree radius search on (x, y), then the angle test on those pairs."""
    from scipy.spatial import cKDTree

    poses = np.asarray(poses, dtype=np.float64)
    xy, uv = poses[:, :2], poses[:, 2:4]
    pairs = cKDTree(xy).query_pairs(max_distance, output_type="ndarray").astype(np.int64)
    i, j = pairs[:, 0], pairs[:, 1]
    keep = (np.linalg.norm(xy[i] - xy[j], axis=1) < max_distance) & (heading_difference(uv[i], uv[j]) < max_angle)
    return i[keep], j[keep]


def pose_similarity(poses: np.ndarray, max_distance: float = 0.3, max_angle: float = 45.0) -> NeighbourSimilarity:
    i, j = similar_pairs(poses, max_distance, max_angle)
    return NeighbourSimilarity.from_pairs(len(poses), i, j)


# ----- images --------------------------------------------------------------------------------------
def resized_size(width: int, height: int, size: int, square: bool) -> tuple[int, int]:
    """(H, W) after torchvision's ``Resize(size)`` (shorter side = size) or ``Resize((size, size))``."""
    return (size, size) if square else shorter_side_size(height, width, size)


def load_image(path: Path, out_hw: tuple[int, int], fast: bool = False) -> np.ndarray:
    """uint8 (3, H, W) RGB image resized with PIL's bilinear filter (what ``transforms.Resize`` does);
    ``fast`` lets libjpeg decode at a reduced scale first (much faster, slightly different pixels)."""
    from PIL import Image

    h, w = out_hw
    with Image.open(path) as im:
        if fast:
            im.draft("RGB", (w, h))
        im = im.convert("RGB")
        if im.size != (w, h):
            im = im.resize((w, h), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


class JpegImages(Dataset):
    """Image files decoded on access: ``images[idx]`` -> uint8 ``(len(idx), 3, H, W)`` tensor (a batch of indices)."""

    device = torch.device("cpu")

    def __init__(self, files: Sequence[Path], out_hw: tuple[int, int], fast: bool = False):
        self.files, self.out_hw, self.fast = list(files), tuple(out_hw), fast

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.files), 3, *self.out_hw)

    def __getitem__(self, idx) -> torch.Tensor:
        idx = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx).reshape(-1)
        return torch.from_numpy(np.stack([load_image(self.files[i], self.out_hw, self.fast) for i in idx])) \
            if len(idx) else torch.empty(0, 3, *self.out_hw, dtype=torch.uint8)

    def subset(self, idx) -> "JpegImages":
        return JpegImages([self.files[i] for i in np.asarray(idx)], self.out_hw, self.fast)


class ArrayImages:
    """A (memory-mapped) uint8 ``(N, 3, H, W)`` array seen through an index: ``images[idx]`` -> tensor copy."""

    device = torch.device("cpu")

    def __init__(self, array: np.ndarray, index: np.ndarray | None = None):
        self.array = array
        self.index = np.arange(len(array)) if index is None else np.asarray(index, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.array.shape[1:])

    def __getitem__(self, idx) -> torch.Tensor:
        idx = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx).reshape(-1)
        rows = self.index[idx]
        order = np.argsort(rows, kind="stable")  # sorted reads from the memory map, then back in request order
        out = np.empty((len(rows), *self.array.shape[1:]), dtype=np.uint8)
        out[order] = self.array[rows[order]]
        return torch.from_numpy(out)

    def subset(self, idx) -> "ArrayImages":
        return ArrayImages(self.array, self.index[np.asarray(idx, dtype=np.int64)])


# ----- the data module -----------------------------------------------------------------------------
class EgoCartDataModule(InMemoryImageDataModule):
    """EgoCart frames with pose labels; see the module docstring for layout, similarity and caching.

    Args:
        image_size: shorter side after resizing (224 for MobileNetV2 as in note 002).
        square: resize to ``image_size x image_size`` instead of keeping the 16:9 aspect (for networks with a
            fixed input size, e.g. model=embedding_net).
        similar_distance, similar_angle: the similarity thresholds (metres, degrees).
        val_size: frames of the training set held out for validation (count or fraction, random); 0 validates
            on the test set, as note 002 does.
        cache_resized: decode every image once into a resized uint8 ``.npy`` per split, memory-mapped afterwards.
        cache_dir: where those files go (null: this dataset's folder under ``cache_root``).
        cache_root: labkit's cache folder (the configs pass ``paths.cache_dir``; null: ``$LABKIT_CACHE_DIR`` or
            ``~/.cache/labkit``).
        fast_decode: let libjpeg decode at a reduced scale before resizing (faster, slightly different pixels).
        keep_on_device: must stay false (the frames do not fit on a GPU at 224 px).
    """

    name = "egocart"
    label_kind = "pose"

    def __init__(self, image_size: int = 224, square: bool = False, similar_distance: float = 0.3,
                 similar_angle: float = 45.0, val_size: int | float = 0, cache_resized: bool = True,
                 cache_dir: str | None = None, fast_decode: bool = False, keep_on_device: bool = False,
                 cache_root: str | None = None, channels: int = 3, num_classes: int = 1, augment: bool = False,
                 **kwargs):
        kwargs.update(channels=channels, num_classes=num_classes)
        EgoCartDataModule.check_args(dict(locals(), **kwargs))
        kwargs["mean"] = kwargs.get("mean") or list(IMAGENET_MEAN)
        kwargs["std"] = kwargs.get("std") or list(IMAGENET_STD)
        super().__init__(val_size=val_size, augment=False, keep_on_device=keep_on_device, image_size=image_size,
                         **kwargs)
        self.square = bool(square)
        self.similar_distance = float(similar_distance)
        self.similar_angle = float(similar_angle)
        self.cache_resized = bool(cache_resized)
        self.cache_dir = cache_dir
        self.cache_root = cache_root
        self.fast_decode = bool(fast_decode)
        self._labels: dict[str, tuple[list[str], np.ndarray]] = {}
        self._similarity: dict[str, NeighbourSimilarity] = {}
        self._out_hw: tuple[int, int] | None = None

    # the rules of this class's own arguments (run by __init__ and, on the config, by the pre-flight)
    check_args = staticmethod(schema.EgoCart.check)

    # ----- files ----------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        d = Path(self.data_dir)
        return d if (d / "train_set").is_dir() else d / "egocart"

    def sources(self) -> list[Path]:
        return [self.root / folder for folder, _, _ in SPLITS.values() if (self.root / folder).is_dir()]

    def check_available(self) -> None:
        """Both splits' label file and image folder are there (reads no image and no label): the pre-flight refuses a
        missing dataset before the run's directory exists, naming where the files go and how to get them."""
        missing = [str(self.root.resolve() / folder / part) for folder, images, txt in SPLITS.values()
                   for part, there in ((txt, (self.root / folder / txt).is_file()),
                                       (images, (self.root / folder / images).is_dir())) if not there]
        if missing:
            raise DatasetNotFoundError(f"EgoCart not found: {', '.join(missing)} missing; {self._layout()}")

    def _layout(self) -> str:
        r = self.root.resolve()
        return (f"expected {r}/train_set/train_RGB/<images>, {r}/train_set/train_set.txt, "
                f"{r}/test_set/test_RGB/<images> and {r}/test_set/test_set.txt. Download egocart.zip (about 2.5 GB) "
                "from https://iplab.dmi.unict.it/EgocentricShoppingCartLocalization/#dataset and extract it with "
                "`unzip egocart.zip -d <data_dir>/egocart` (data.data_dir sets the root folder)")

    def labels(self, split: str) -> tuple[list[str], np.ndarray]:
        """(image names, poses) of the official ``train`` or ``test`` set, read once."""
        if split not in self._labels:
            folder, images, txt = SPLITS[split]
            path = self.root / folder / txt
            if not path.is_file() or not (self.root / folder / images).is_dir():
                raise DatasetNotFoundError(f"EgoCart {split} set not found: {self._layout()}")
            self._labels[split] = read_labels(path)
        return self._labels[split]

    def files(self, split: str) -> list[Path]:
        folder, images, _ = SPLITS[split]
        names = self.labels(split)[0]
        files = [self.root / folder / images / n for n in names]
        missing = [f for f in files[:1] + files[-1:] if not f.is_file()]
        if missing:
            raise DatasetNotFoundError(f"EgoCart image {missing[0]} listed in {SPLITS[split][2]} does not exist: "
                                       f"{self._layout()}")
        return files

    @property
    def out_hw(self) -> tuple[int, int]:
        """(H, W) of the resized frames, from the size of the first training image."""
        if self._out_hw is None:
            from PIL import Image

            with Image.open(self.files("train")[0]) as im:
                w, h = im.size
            self._out_hw = resized_size(w, h, self.image_size, self.square)
        return self._out_hw

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, *self.out_hw)

    # ----- cache ----------------------------------------------------------------------------------
    def cache_path(self, split: str) -> Path:
        self.labels(split)  # the dataset must be there
        folder, _, txt = SPLITS[split]
        digest = hashlib.sha1((self.root / folder / txt).read_bytes()).hexdigest()[:8]
        h, w = self.out_hw
        fast = "_fast" if self.fast_decode else ""
        name = f"egocart_{split}_{h}x{w}{fast}_{digest}.npy"
        if self.cache_dir:
            return Path(str(self.cache_dir)).expanduser() / name
        legacy = self.root / ".labkit_cache" / name  # made by an older labkit: still valid, reuse it
        if legacy.is_file():
            return legacy
        return dataset_cache_dir(self.cache_root, self.root) / name

    def build_cache(self, split: str) -> Path:
        """Decode and resize every image of ``split`` once into its ``.npy`` (no-op when it exists)."""
        path = self.cache_path(split)
        if path.exists():
            return path
        from numpy.lib.format import open_memmap

        from labkit.core.console import progress
        from labkit.core.files import clean_stale_temporaries, temporary_path

        files = self.files(split)
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temporaries(path.parent)  # a build that was killed half-way leaves a large temporary
        tmp = temporary_path(path)
        arr = open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), 3, *self.out_hw))
        images = JpegImages(files, self.out_hw, self.fast_decode)
        loader = DataLoader(images, sampler=BatchSampler(SequentialSampler(images), 64, drop_last=False),
                            batch_size=None, num_workers=self.num_workers)
        try:
            pos = 0
            for batch in progress(loader, desc=f"caching egocart {split} at {self.out_hw[0]}x{self.out_hw[1]}"):
                arr[pos:pos + len(batch)] = batch.numpy()
                pos += len(batch)
            arr.flush()
            del arr
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        log.info("egocart: cached %d %s images in %s", len(files), split, path)
        return path

    def _images(self, split: str):
        if self.cache_resized:
            path = self.build_cache(split)
            try:  # allow_pickle stays False: a cache file can never run code
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                raise CorruptFileError(f"{path} is not a valid egocart cache ({type(e).__name__}: {str(e)[:200]}); "
                                       "delete it and it is rebuilt from the images on the next run") from None
            expected = (len(self.labels(split)[0]), 3, *self.out_hw)
            if array.dtype != np.uint8 or array.shape != expected:
                raise CorruptFileError(f"{path} is not a valid egocart cache: it holds {array.dtype} {array.shape}, "
                                       f"expected uint8 {expected}; delete it and it is rebuilt on the next run")
            return ArrayImages(array)
        return JpegImages(self.files(split), self.out_hw, self.fast_decode)

    # ----- Lightning hooks ----------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.cache_resized:
            for split in SPLITS:
                self.build_cache(split)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train = Split(self._images("train"), torch.from_numpy(self.labels("train")[1]))
        test = Split(self._images("test"), torch.from_numpy(self.labels("test")[1]))
        keep, held = holdout(np.zeros(len(train)), self.val_size, self.seed)
        if len(held):
            self.splits = {"train": Split(train.x.subset(keep), train.y[keep]),
                           "val": Split(train.x.subset(held), train.y[held]), "test": test}
        else:  # note 002 validates on the test set
            self.splits = {"train": train, "val": test, "test": test}
        log.info("egocart: %d train, %d val%s, %d test frames at %s", len(self.splits["train"]),
                 len(self.splits["val"]), " (the test set)" if not len(held) else "", len(test),
                 "x".join(map(str, self.input_shape)))

    def poses(self, split: str) -> np.ndarray:
        """(N, 4) float32 poses (x, y, u, v) of ``train``, ``val`` or ``test``, in :meth:`loader` order."""
        if not self.splits:
            self.setup()
        return self.splits[split].y.numpy()

    def similarity(self, split: str) -> NeighbourSimilarity:
        """Pose neighbours of ``split`` (closer than similar_distance and similar_angle), computed once."""
        if split not in self._similarity:
            sim = pose_similarity(self.poses(split), self.similar_distance, self.similar_angle)
            log.info("egocart %s: %d similar pairs, %.1f neighbours per frame on average, %d frames without any",
                     split, len(sim.indices) // 2, sim.degree.mean(), int((sim.degree == 0).sum()))
            self._similarity[split] = sim
        return self._similarity[split]

    def transform(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """uint8 batch -> ImageNet-normalized float batch (no augmentation, as in note 002)."""
        return self._normalize(x)
