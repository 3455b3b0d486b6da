"""Image files on disk and the files labkit keeps about them (outside the dataset folder).

* where labkit writes about a dataset: :func:`dataset_cache_dir` (``<cache_root>/<folder name>-<hash>``);
* small CSV tables (:func:`write_csv`, written atomically; :func:`read_table`, a clear error when edited);
* finding images: :func:`scan_class_folders` (``<root>/<class>/<image>``);
* checking them once: :func:`check_image` and :func:`verify_images` (verdicts cached in ``verified.csv``);
* reading them: :class:`ImageFileDataset`, optionally through resized PNG copies (:func:`resize_shorter_side`).

Used by :mod:`labkit.data.folder` (and :mod:`labkit.data.egocart` for its cache folder).
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

from PIL import Image
from torch.utils.data import Dataset

from labkit.core.errors import LabkitError
from labkit.core.images import shorter_side_size

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VERIFIED_FILE = "verified.csv"


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


# ----- small CSV tables ----------------------------------------------------------------------------
def write_csv(path: Path, header: Sequence[str], rows) -> None:
    from labkit.core.files import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_table(path: Path, columns: Sequence[str], fix: str) -> list[dict[str, str]]:
    """The rows of a CSV file labkit saved, or a :class:`CorruptFileError` naming it (edited, truncated...)."""
    from labkit.core.safe_load import CorruptFileError

    try:
        rows = read_csv(path)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CorruptFileError(f"{path} cannot be read ({type(e).__name__}: {e}); {fix}") from None
    if any(any(r.get(c) is None for c in columns) for r in rows):
        raise CorruptFileError(f"{path} is corrupt: every row needs the columns {', '.join(columns)}; {fix}")
    return rows


# ----- image files ---------------------------------------------------------------------------------
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


def verify_images(root: Path, paths: list[str], cache_file: Path, name: str = "data") -> dict[str, str]:
    """``{relative path: reason}`` of the unreadable images among ``paths`` (relative to ``root``), each checked with
    :func:`check_image` once: the verdicts are cached in ``cache_file`` by size and modification time. ``name``
    (the data module's) starts the log lines."""
    known: dict[str, tuple[str, str, str]] = {}
    if cache_file.exists():
        try:
            known = {r["path"]: (r["size"], r["mtime_ns"], r["error"]) for r in read_csv(cache_file)}
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
        log.info("%s: checking %d image files (once; verdicts cached in %s)", name, len(todo), cache_file)
        with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2))) as pool:
            for p, err in zip(todo, pool.map(lambda q: check_image(root / q), todo)):
                verdicts[p] = err
        try:
            write_csv(cache_file, ["path", "size", "mtime_ns", "error"],
                      [(p, *stats[p], verdicts[p]) for p in paths])
        except OSError as e:
            log.warning("%s: cannot save the image check cache %s (%s); set data.work_dir to a writable "
                        "folder to make later runs faster", name, cache_file, e.strerror)
    return {p: verdicts[p] for p in paths if verdicts[p]}


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
        from labkit.core.files import temporary_path

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
