"""Class-per-folder image data: Caltech101 layout, saved split, corrupt files, transforms, end to end."""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from labkit.core.errors import ConfigError, DatasetNotFoundError, IncompatibleError
from labkit.data import folder as F
from labkit.data.folder import Caltech101DataModule, CorruptImagesError, ImageFolderDataModule

CLASSES = ["Faces", "accordion", "airplanes"]  # sorted() order: capitals first, like torchvision


@pytest.fixture(autouse=True)
def _cache_root(tmp_path, monkeypatch):
    """Modules built without a cache_root use $LABKIT_CACHE_DIR: keep it inside the test's folder."""
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_tree(root: Path, classes=CLASSES, per_class: int = 8, background: bool = True, corrupt: bool = True,
               seed: int = 0) -> Path:
    """JPEG files per class (a class-dependent colour plus noise; every 4th one greyscale), a
    BACKGROUND_Google folder and one truncated JPEG in the first class."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes + (["BACKGROUND_Google"] if background else [])):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = 40 + 3 * (i % 3), 48 + 5 * (i % 2)
            x = rng.integers(0, 40, size=(h, w, 3), dtype=np.uint8)
            x[..., c % 3] += np.uint8(150 + 30 * (c // 3))
            img = Image.fromarray(x)
            if i % 4 == 3:
                img = img.convert("L")
            img.save(d / f"image_{i + 1:04d}.jpg", quality=90)
    if corrupt:
        good = (root / classes[0] / "image_0001.jpg").read_bytes()
        (root / classes[0] / "image_9999.jpg").write_bytes(good[: len(good) // 3])
    (root / classes[1] / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def caltech(tmp_path) -> Path:
    """<tmp>/data/caltech101/101_ObjectCategories, torchvision's layout."""
    return write_tree(tmp_path / "data" / "caltech101" / "101_ObjectCategories")


def small(**kw):
    kw.setdefault("resize", 36)
    kw.setdefault("image_size", 32)
    kw.setdefault("batch_size", 4)
    kw.setdefault("num_workers", 0)
    return kw


def read_split(d: Path, split: str) -> list[tuple[str, str]]:
    with open(d / f"{split}.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "label"]
    return [tuple(r) for r in rows[1:]]


def test_caltech101_classes_split_and_corrupt_report(caltech, tmp_path, caplog):
    dm = Caltech101DataModule(data_dir=str(tmp_path / "data"), num_classes=3, **small())
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert dm.images_root == caltech
    assert dm.classes == CLASSES  # BACKGROUND_Google left out
    bad = caltech / "Faces" / "image_9999.jpg"
    assert list(dm.corrupt) == ["Faces/image_9999.jpg"]
    assert str(bad) in caplog.text and "unreadable" in caplog.text

    work = F.dataset_cache_dir(None, caltech)
    assert work.parent == tmp_path / "cache" and work.name.startswith("101_ObjectCategories-")
    split_dir = work / "splits_seed0"
    assert dm.split_dir == split_dir
    rows = {s: read_split(split_dir, s) for s in ("train", "val", "test")}
    everything = [p for s in rows.values() for p, _ in s]
    assert len(everything) == len(set(everything)) == 3 * 8  # disjoint, all good images, nothing else
    assert "Faces/image_9999.jpg" not in everything
    assert not any(p.startswith("BACKGROUND_Google") for p in everything)
    assert (len(rows["train"]), len(rows["val"]), len(rows["test"])) == (15, 2, 7)  # 60/10/30 of 24, rounded
    for p, label in [r for s in rows.values() for r in s]:
        assert CLASSES[int(label)] == p.split("/")[0]
    assert {int(lab) for _, lab in rows["test"]} == {0, 1, 2}  # stratified
    assert (split_dir / "classes.csv").exists() and (work / "verified.csv").exists()

    # a second run reuses the CSV files and the image verdicts (no file is decoded again)
    mtimes = {s: (split_dir / f"{s}.csv").stat().st_mtime_ns for s in ("train", "val", "test")}

    def no_check(path):
        raise AssertionError(f"{path} checked again")

    import labkit.data.files as folder_module
    orig = folder_module.check_image
    folder_module.check_image = no_check
    try:
        dm2 = Caltech101DataModule(data_dir=str(tmp_path / "data"), num_classes=3, **small())
        caplog.clear()
        with caplog.at_level(logging.INFO):
            dm2.setup("fit")
    finally:
        folder_module.check_image = orig
    assert dm2.samples == dm.samples
    assert "reusing the split" in caplog.text and str(bad) in caplog.text
    assert {s: (split_dir / f"{s}.csv").stat().st_mtime_ns for s in mtimes} == mtimes

    # another seed gives another split folder and another split
    dm3 = Caltech101DataModule(data_dir=str(tmp_path / "data"), num_classes=3, seed=1, **small())
    dm3.setup()
    assert dm3.split_dir.name == "splits_seed1" and dm3.samples["test"] != dm.samples["test"]


def test_on_corrupt_error_lists_the_files(caltech, tmp_path):
    dm = Caltech101DataModule(data_dir=str(tmp_path / "data"), num_classes=3, on_corrupt="error", **small())
    with pytest.raises(CorruptImagesError, match="image_9999.jpg") as exc:
        dm.setup()
    assert str(caltech / "Faces" / "image_9999.jpg") in str(exc.value) and "on_corrupt=skip" in str(exc.value)
    with pytest.raises(ConfigError, match="data.on_corrupt='maybe'"):
        Caltech101DataModule(data_dir=str(tmp_path / "data"), on_corrupt="maybe")


def test_batches_are_rgb_normalized_crops(caltech, tmp_path):
    dm = Caltech101DataModule(root=str(caltech), num_classes=3, **small())  # the folder itself as root
    dm.setup()
    assert dm.images_root == caltech
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() < 0  # ImageNet-normalized
    # greyscale files come out with 3 channels too
    grey = next(i for i, (p, _) in enumerate(dm.samples["train"]) if p.endswith(("0004.jpg", "0008.jpg")))
    img, _ = dm.dataset("train")[grey]
    assert img.shape == (3, 32, 32)
    # evaluation loaders are deterministic (centre crop, no shuffling)
    a = torch.cat([b[0] for b in dm.loader("test")])
    b = torch.cat([b[0] for b in dm.loader("test")])
    assert torch.equal(a, b) and len(a) == len(dm.samples["test"])
    assert dm.transform(a, train=False) is a


def test_resized_cache(caltech, tmp_path):
    dm = Caltech101DataModule(data_dir=str(tmp_path / "data"), num_classes=3, cache_resized=True, **small())
    dm.setup()
    plain = Caltech101DataModule(data_dir=str(tmp_path / "data"), num_classes=3, **small())
    plain.setup()
    first = [dm.dataset("val")[i][0] for i in range(len(dm.samples["val"]))]
    cached = sorted((F.dataset_cache_dir(None, caltech) / "cache_36").rglob("*.png"))
    assert len(cached) == len(dm.samples["val"])
    with Image.open(cached[0]) as im:
        assert min(im.size) == 36
    again = [dm.dataset("val")[i][0] for i in range(len(dm.samples["val"]))]
    assert all(torch.equal(u, v) for u, v in zip(first, again))
    ref = [plain.dataset("val")[i][0] for i in range(len(plain.samples["val"]))]
    assert all(torch.equal(u, v) for u, v in zip(first, ref))  # the cache is lossless


def test_worker_processes(caltech, tmp_path):
    dm = Caltech101DataModule(data_dir=str(tmp_path / "data"), num_classes=3, **small(num_workers=1))
    dm.setup()
    loader = dm.train_dataloader()
    assert loader.num_workers == 1 and loader.persistent_workers
    assert sum(len(b[1]) for b in loader) == len(dm.samples["train"])


def test_missing_dataset_and_wrong_class_count(tmp_path):
    with pytest.raises(DatasetNotFoundError) as exc:
        Caltech101DataModule(data_dir=str(tmp_path / "nowhere"), **small()).setup()
    msg = str(exc.value)
    assert "caltech101/101_ObjectCategories" in msg and "data.caltech.edu" in msg and "download=true" in msg
    with pytest.raises(DatasetNotFoundError, match="one sub-folder per class"):
        ImageFolderDataModule(root=str(tmp_path / "nowhere"), num_classes=3, **small()).setup()
    root = write_tree(tmp_path / "flowers", background=False, corrupt=False)
    with pytest.raises(IncompatibleError, match="data.num_classes=3"):
        ImageFolderDataModule(root=str(root), num_classes=5, **small()).setup()
    with pytest.raises(ConfigError, match="data.split"):
        ImageFolderDataModule(root=str(root), num_classes=3, split=[0.5, 0.5, 0.5], **small())
    with pytest.raises(ConfigError, match="data.resize"):
        ImageFolderDataModule(root=str(root), num_classes=3, resize=16, image_size=32)


def test_image_folder_split_fractions_and_stale_split(tmp_path):
    root = write_tree(tmp_path / "flowers", background=False, corrupt=False, per_class=10)
    dm = ImageFolderDataModule(root=str(root), num_classes=3, split=[0.5, 0.2, 0.3], **small())
    dm.setup()
    assert dm.split_dir == F.dataset_cache_dir(None, root) / "splits_seed0_0.5-0.2-0.3"
    assert [len(dm.samples[s]) for s in ("train", "val", "test")] == [15, 6, 9]
    removed = root / dm.samples["test"][0][0]
    removed.unlink()
    with pytest.raises(IncompatibleError, match="no longer exist"):
        ImageFolderDataModule(root=str(root), num_classes=3, split=[0.5, 0.2, 0.3], **small()).setup()


@pytest.mark.slow
def test_train_end_to_end_on_an_image_folder(tmp_path, cfg_factory):
    from labkit.run.lifecycle import execute

    root = write_tree(tmp_path / "flowers", background=False)
    cfg = cfg_factory("data=image_folder", f"data.root={root}", "data.num_classes=3", "data.resize=36",
                      "data.image_size=32", "data.num_workers=0", "data.batch_size=8", "model=resnet18",
                      "trainer=debug", "logger=none")
    metrics = execute(cfg)
    assert metrics["status"] == "ok" and "test/acc" in metrics


@pytest.mark.slow
def test_train_end_to_end_on_caltech101(caltech, cfg_factory):
    from labkit.run.lifecycle import execute

    cfg = cfg_factory("data=caltech101", "data.num_classes=3", "data.resize=36", "data.image_size=32",
                      "data.num_workers=0", "model=lenet_color", "trainer=debug", "logger=none")
    assert cfg.data.data_dir == str(caltech.parents[1])
    metrics = execute(cfg)
    assert metrics["status"] == "ok" and "test/acc" in metrics


def test_failed_download_explains_where_to_get_caltech101(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise RuntimeError("gdown: cannot reach drive.google.com (simulated)")

    monkeypatch.setattr(tvd, "Caltech101", offline)
    dm = Caltech101DataModule(data_dir=str(tmp_path / "data"), download=True, **small())
    with pytest.raises(DatasetNotFoundError, match="downloading caltech101 failed.*data.caltech.edu"):
        dm.prepare_data()
