"""Rules of the data modules' arguments (:mod:`labkit.data`): each function is a class's ``check_args``, run before
any file is read. No torch here."""
from __future__ import annotations

from typing import Any, Mapping

from labkit.core import checks

ON_CORRUPT = ("skip", "error")
COLOR_JITTER = ("brightness", "contrast", "saturation")


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


def lab_data_module(a: Mapping[str, Any]) -> None:
    """``LabDataModule``: batch sizes, geometry, workers, normalization."""
    checks.positive_int("data.batch_size", a["batch_size"])
    checks.positive_int("data.eval_batch_size", a["eval_batch_size"], optional=True)
    for key in ("channels", "image_size", "num_classes"):
        checks.positive_int(f"data.{key}", a[key])
    checks.non_negative_int("data.num_workers", a["num_workers"])
    for key, minimum in (("mean", None), ("std", 0.0)):
        checks.per_channel(f"data.{key}", a[key], a["channels"], above=minimum, optional=True)
    checks.boolean("data.resample_tuples", a["resample_tuples"])


def in_memory(a: Mapping[str, Any]) -> None:
    """``InMemoryImageDataModule``: the validation hold-out and the augmentation."""
    checks.count_or_fraction("data.val_size", a["val_size"])
    checks.fraction("data.hflip", a["hflip"])
    checks.non_negative_int("data.pad", a.get("pad", 0), hint="pixels of zero padding per side before the crop")
    checks.fraction("data.erasing", a.get("erasing", 0.0))
    for key, v in dict(a["color_jitter"] or {}).items():
        if key not in COLOR_JITTER:
            raise checks.unknown_key("data.color_jitter", key, COLOR_JITTER)
        checks.non_negative(f"data.color_jitter.{key}", v)


def image_folder(a: Mapping[str, Any]) -> None:
    """``ImageFolderDataModule``: channels, the split, the resize, corrupt files, the flip."""
    checks.one_of("data.channels", a.get("channels", 3), (1, 3),
                  hint="3 is RGB (grey images are converted), 1 greyscale")
    if parse_fractions(a["split"]) is None:
        raise checks.invalid("data.split", a["split"], "three fractions > 0 for train, val and test that sum to 1",
                             "e.g. [0.6, 0.1, 0.3]")
    image_size = a.get("image_size", 224)
    if not checks._is_int(a["resize"]) or (checks._is_int(image_size) and a["resize"] < image_size):
        raise checks.invalid("data.resize", a["resize"], f"an integer >= data.image_size={image_size}",
                             "the crop is taken from the resized image")
    checks.one_of("data.on_corrupt", a["on_corrupt"], ON_CORRUPT,
                  hint="skip warns and leaves the files out, error stops")
    checks.fraction("data.hflip", a["hflip"])


def egocart(a: Mapping[str, Any]) -> None:
    """``EgoCartDataModule``: host-side frames, RGB, the similarity thresholds."""
    if a.get("keep_on_device"):
        raise checks.invalid("data.keep_on_device", True, "false for egocart",
                             "its images stay on the host (memory-mapped when cached) and batches move to the device")
    checks.one_of("data.channels", a.get("channels", 3), (3,), hint="EgoCart's frames are RGB")
    checks.positive("data.similar_distance", a["similar_distance"])
    checks.positive("data.similar_angle", a["similar_angle"])
