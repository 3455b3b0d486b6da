"""Seeded train/val/test splits of a list of image files, saved as CSV files so that the test set never changes.

A split is ``train.csv``, ``val.csv``, ``test.csv`` (columns ``path,label``, paths relative to the image root),
``classes.csv`` and ``corrupt.csv`` in one folder (``splits_seed<seed>[_<fractions>]``, see :func:`split_dir_name`).
:func:`load_or_make_split` reuses the files when they are there and makes (stratified, seeded with
:func:`labkit.data.memory.holdout`) and saves them otherwise.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from labkit.core.errors import ConfigError, IncompatibleError
from labkit.data.files import read_table, write_csv
from labkit.data.memory import holdout
from labkit.schemas.data import parse_fractions  # noqa: F401  (the rule lives with the others)

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def split_dir_name(seed: int, fractions: Sequence[float]) -> str:
    """``splits_seed<seed>``, plus ``_<train>-<val>-<test>`` when the fractions are not the default 0.6/0.1/0.3."""
    name = f"splits_seed{seed}"
    if [round(f, 6) for f in fractions] != [0.6, 0.1, 0.3]:
        name += "_" + "-".join(f"{f:g}" for f in fractions)
    return name


def load_or_make_split(d: Path, good: list[tuple[str, int]], classes: list[str], fractions: Sequence[float],
                       seed: int, corrupt: dict[str, str], name: str = "data") -> dict[str, list]:
    """``{split: [(relative path, label), ...]}`` of the readable images ``good``: read from the CSV files in ``d``
    when they exist (:func:`read_split`), else a new seeded, stratified split by ``fractions`` (train, val, test)
    saved there, with ``classes.csv`` and the ``corrupt`` files left out (``corrupt.csv``)."""
    files = {s: d / f"{s}.csv" for s in SPLITS}
    if all(f.exists() for f in files.values()):
        return read_split(d, good, classes, corrupt, name)
    y = np.array([label for _, label in good])
    n = len(good)
    n_test, n_val = int(round(fractions[2] * n)), int(round(fractions[1] * n))
    if n - n_test - n_val < 1 or n_test < 1 or n_val < 1:
        raise IncompatibleError(f"{name}: {n} readable images are too few for the split {fractions}")
    rest, test = holdout(y, n_test, seed)
    keep, val = holdout(y[rest], n_val, seed)
    parts = {"train": rest[keep], "val": rest[val], "test": test}
    out = {s: [good[i] for i in sorted(idx)] for s, idx in parts.items()}
    try:
        for s in SPLITS:
            write_csv(files[s], ["path", "label"], out[s])
        write_csv(d / "classes.csv", ["label", "class"], list(enumerate(classes)))
        write_csv(d / "corrupt.csv", ["path", "error"], sorted(corrupt.items()))
    except OSError as e:
        raise ConfigError(f"{name}: cannot write the split files to {d} ({e.strerror}); set data.work_dir "
                          "to a writable folder") from None
    log.info("%s: new seeded split (seed %d, %s) saved in %s", name, seed, fractions, d)
    return out


def read_split(d: Path, good: list[tuple[str, int]], classes: list[str], corrupt: dict[str, str],
               name: str = "data") -> dict[str, list]:
    """The split saved in ``d``, checked against the class folders and the readable images ``good`` now (files
    listed in ``corrupt`` are dropped)."""
    files = {s: d / f"{s}.csv" for s in SPLITS}
    fix = f"delete {d} to make a new split"
    saved_classes = d / "classes.csv"
    if saved_classes.exists():
        names = [r["class"] for r in read_table(saved_classes, ("label", "class"), fix)]
        if names != classes:
            raise IncompatibleError(f"{name}: the class folders changed since the split in {d} was made "
                                    f"(saved {len(names)}, now {len(classes)}); delete {d} to make a new split")
    good_set = dict(good)
    out, missing, dropped = {}, [], []
    for s in SPLITS:
        rows = []
        for r in read_table(files[s], ("path", "label"), fix):
            p, label = r["path"], r["label"]
            if not label.isdigit() or int(label) >= len(classes):
                from labkit.core.safe_load import CorruptFileError

                raise CorruptFileError(f"{files[s]} is corrupt: label {label!r} of {p} is not one of 0..."
                                       f"{len(classes) - 1}; {fix}")
            label = int(label)
            if p in corrupt:
                dropped.append(p)
            elif p not in good_set:
                missing.append(p)
            else:
                rows.append((p, label))
        out[s] = rows
    if missing:
        raise IncompatibleError(f"{name}: {len(missing)} image(s) listed in the split files of {d} no longer "
                                f"exist (e.g. {', '.join(missing[:5])}); delete {d} to make a new split")
    listed = {p for s in SPLITS for p, _ in out[s]} | set(dropped)
    extra = [p for p in good_set if p not in listed]
    if extra:
        log.warning("%s: %d image(s) added after the split in %s was made are not used (e.g. %s); delete that "
                    "folder to re-split", name, len(extra), d, ", ".join(extra[:5]))
    log.info("%s: reusing the split in %s", name, d)
    return out
