"""Schemas of the data modules (:mod:`labkit.data`): one per ``_target_`` of ``conf/data/``, and their rules."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional

from labkit.core import checks
from labkit.schemas.base import MISSING, schema

ON_CORRUPT = ("skip", "error")
COLOR_JITTER = ("brightness", "contrast", "saturation")
SAMPLING = ("single", "pairs", "triplets")


def parse_fractions(split) -> list[float] | None:
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


@dataclass
class LabData:
    """What every data module takes (``labkit.data.LabDataModule``)."""

    data_dir: str = "data"  # where the dataset's files are (paths.data_dir)
    batch_size: int = 64  # the global training batch (split across DDP processes)
    eval_batch_size: Optional[int] = None  # validation/test batch (null: batch_size)
    num_workers: int = 0  # DataLoader worker processes
    seed: int = 0  # seeds the split and the batch order
    channels: int = 1  # image channels the batches have (1 grey, 3 RGB)
    image_size: int = 28  # side of the square images the network sees
    num_classes: int = 10  # number of labels
    mean: Optional[List[float]] = None  # per-channel normalization (null: computed on the training split)
    std: Optional[List[float]] = None  # per-channel standard deviation (null: computed on the training split)
    sampling: str = "single"  # set by the task: single images, pairs or triplets
    resample_tuples: bool = True  # metric learning: new pairs/triplets every epoch (false: one draw, note 002)

    @staticmethod
    def check(a: Mapping[str, Any]) -> None:
        """batch sizes, channels, image_size and num_classes are positive integers; mean/std one value per channel
        (std > 0)."""
        checks.positive_int("data.batch_size", a["batch_size"])
        checks.positive_int("data.eval_batch_size", a["eval_batch_size"], optional=True)
        for key in ("channels", "image_size", "num_classes"):
            checks.positive_int(f"data.{key}", a[key])
        checks.non_negative_int("data.num_workers", a["num_workers"])
        for key, minimum in (("mean", None), ("std", 0.0)):
            checks.per_channel(f"data.{key}", a[key], a["channels"], above=minimum, optional=True)
        checks.one_of("data.sampling", a["sampling"], SAMPLING)
        checks.boolean("data.resample_tuples", a["resample_tuples"])


@dataclass
class InMemoryData(LabData):
    """Datasets held in memory (``labkit.data.InMemoryImageDataModule``): hold-out, augmentation, placement."""

    val_size: Any = 0.1  # validation hold-out from the training set: a count, or a fraction in (0, 1)
    augment: bool = False  # training augmentation (flip, colour jitter, random crop to image_size)
    hflip: float = 0.5  # probability of a horizontal flip in training
    color_jitter: Any = None  # {brightness, contrast, saturation} amounts (a mapping)
    pad: int = 0  # zero padding (pixels per side) before the random crop
    erasing: float = 0.0  # probability of RandomErasing per training image
    keep_on_device: bool = True  # move the dataset to the accelerator at setup
    download: bool = False  # fetch the files with torchvision when they are missing (needs a network)
    channels_last: Optional[bool] = None  # NHWC batches (null: on the CPU only, where it is faster)

    @staticmethod
    def check(a: Mapping[str, Any]) -> None:
        """val_size a count or a fraction; hflip and erasing fractions; pad >= 0; color_jitter keys brightness,
        contrast, saturation with amounts >= 0."""
        checks.count_or_fraction("data.val_size", a["val_size"])
        checks.fraction("data.hflip", a["hflip"])
        checks.non_negative_int("data.pad", a.get("pad", 0), hint="pixels of zero padding per side before the crop")
        checks.fraction("data.erasing", a.get("erasing", 0.0))
        for key, v in dict(a["color_jitter"] or {}).items():
            if key not in COLOR_JITTER:
                raise checks.unknown_key("data.color_jitter", key, COLOR_JITTER)
            checks.non_negative(f"data.color_jitter.{key}", v)


@schema("labkit.data.DigitsDataModule", "data")
class Digits(InMemoryData):
    """scikit-learn's 8x8 handwritten digits (no download)."""

    test_size: Any = 0.2  # test split taken from the 1,797 images: a count or a fraction

    @staticmethod
    def check(a: Mapping[str, Any]) -> None:
        """test_size a count or a fraction."""
        checks.count_or_fraction("data.test_size", a["test_size"])


@schema("labkit.data.MNISTDataModule", "data")
class MNIST(InMemoryData):
    """MNIST from torchvision's files (<data_dir>/MNIST/raw)."""


@schema("labkit.data.FashionMNISTDataModule", "data")
class FashionMNIST(MNIST):
    """Fashion-MNIST from torchvision's files (<data_dir>/FashionMNIST/raw)."""


@schema("labkit.data.CIFAR10DataModule", "data")
class CIFAR10(InMemoryData):
    """CIFAR-10 from the python batches (<data_dir>/cifar-10-batches-py)."""


@schema("labkit.data.CIFAR100DataModule", "data")
class CIFAR100(CIFAR10):
    """CIFAR-100 from the python batches (<data_dir>/cifar-100-python)."""


@schema("labkit.data.egocart.EgoCartDataModule", "data")
class EgoCart(InMemoryData):
    """EgoCart frames with (x, y, u, v) pose labels."""

    image_size: int = 224  # shorter side after resizing
    channels: int = 3  # EgoCart's frames are RGB
    num_classes: int = 1  # (poses, not classes)
    val_size: Any = 0  # frames held out for validation (0: validate on the test set, as note 002)
    keep_on_device: bool = False  # must stay false: the frames stay on the host
    square: bool = False  # resize to image_size x image_size instead of keeping 16:9
    similar_distance: float = 0.3  # metres within which two frames count as similar
    similar_angle: float = 45.0  # degrees within which two frames count as similar
    cache_resized: bool = True  # decode once into a memory-mapped .npy per split
    cache_dir: Optional[str] = None  # where those files go (null: under cache_root)
    fast_decode: bool = False  # let libjpeg decode at a reduced scale (faster, slightly different pixels)
    cache_root: Optional[str] = None  # labkit's cache folder (paths.cache_dir)

    @staticmethod
    def check(a: Mapping[str, Any]) -> None:
        """keep_on_device and augment false, channels 3, similarity thresholds > 0."""
        if a.get("keep_on_device"):
            raise checks.invalid("data.keep_on_device", True, "false for egocart",
                                 "its images stay on the host (memory-mapped when cached) and batches move to the "
                                 "device")
        if a.get("augment"):
            raise checks.invalid("data.augment", True, "false for egocart", "its frames are not augmented")
        checks.one_of("data.channels", a.get("channels", 3), (3,), hint="EgoCart's frames are RGB")
        checks.positive("data.similar_distance", a["similar_distance"])
        checks.positive("data.similar_angle", a["similar_angle"])


@schema("labkit.data.folder.ImageFolderDataModule", "data")
class ImageFolder(LabData):
    """Any class-per-folder image dataset (<root>/<class>/<image>) with a saved seeded split."""

    root: Optional[str] = MISSING  # folder holding one sub-folder per class (required)
    split: List[float] = (0.6, 0.1, 0.3)  # train/val/test fractions summing to 1 (stratified, seeded)
    resize: int = 256  # the shorter side is resized to this before cropping
    augment: bool = True  # random crop + horizontal flip in training
    hflip: float = 0.5  # probability of the horizontal flip
    exclude: Optional[List[str]] = None  # class folder names to ignore
    on_corrupt: str = "skip"  # skip unreadable files with a warning, or error
    cache_resized: bool = False  # keep resized PNG copies of the images
    work_dir: Optional[str] = None  # where splits, verdicts and the cache go (null: under cache_root)
    cache_root: Optional[str] = None  # labkit's cache folder (paths.cache_dir)
    channels: int = 3  # 3 is RGB (grey images are converted), 1 greyscale
    image_size: int = 224  # side of the square crop fed to the network
    num_classes: int = MISSING  # the number of class folders (required: it sizes the model's head)

    @staticmethod
    def check(a: Mapping[str, Any]) -> None:
        """channels 1 or 3; split three fractions > 0 summing to 1; resize >= image_size; on_corrupt skip or error;
        hflip a fraction."""
        checks.one_of("data.channels", a.get("channels", 3), (1, 3),
                      hint="3 is RGB (grey images are converted), 1 greyscale")
        if parse_fractions(a["split"]) is None:
            raise checks.invalid("data.split", a["split"], "three fractions > 0 for train, val and test that sum to 1",
                                 "e.g. [0.6, 0.1, 0.3]")
        image_size = a.get("image_size", 224)
        if not checks.is_int(a["resize"]) or (checks.is_int(image_size) and a["resize"] < image_size):
            raise checks.invalid("data.resize", a["resize"], f"an integer >= data.image_size={image_size}",
                                 "the crop is taken from the resized image")
        checks.one_of("data.on_corrupt", a["on_corrupt"], ON_CORRUPT,
                      hint="skip warns and leaves the files out, error stops")
        checks.fraction("data.hflip", a["hflip"])


@schema("labkit.data.folder.Caltech101DataModule", "data")
class Caltech101(ImageFolder):
    """Caltech101 (note 000): 101 object categories, BACKGROUND_Google excluded."""

    download: bool = False  # try torchvision's download (Google Drive, needs gdown)
    root: Optional[str] = None  # the folder (null: <data_dir>/caltech101/101_ObjectCategories)
    num_classes: int = 101  # the 101 categories


__all__ = ["LabData", "InMemoryData", "Digits", "MNIST", "FashionMNIST", "CIFAR10", "CIFAR100", "EgoCart",
           "ImageFolder", "Caltech101", "MISSING", "parse_fractions"]
