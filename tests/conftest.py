"""Shared fixtures: compose configs in-process, write tiny datasets in their genuine on-disk formats."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

import labkit.run.directory  # noqa: F401  (resolvers)
from labkit.data.vision import write_idx  # noqa: F401  (re-exported for the tests)

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("PL_DISABLE_FORK", "1")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The tests' networks and batches are tiny: one intra-op thread is as fast and avoids OpenMP
    oversubscription while subprocess tests (sweeps, DDP) run beside them."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_cfg(overrides: list[str], tmp_path: Path, config_name: str = "train") -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with overrides; outputs and data go under ``tmp_path``.

    Defaults for speed: CPU, no progress bar.
    """
    GlobalHydra.instance().clear()
    base = []
    if config_name == "train":
        base = [f"paths.data_dir={tmp_path / 'data'}", f"paths.log_dir={tmp_path / 'logs'}",
                "trainer.accelerator=cpu", "trainer.devices=1", "trainer.enable_progress_bar=false"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=base + list(overrides))
    if config_name == "train":
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
    return cfg


@pytest.fixture
def cfg_factory(tmp_path):
    def factory(*overrides: str, name: str = "train", sub: str = "") -> DictConfig:
        path = tmp_path / sub if sub else tmp_path
        path.mkdir(parents=True, exist_ok=True)
        return make_cfg(list(overrides), path, name)
    return factory


# ----- genuine on-disk formats -------------------------------------------------------------------
def synthetic_digits(n: int, num_classes: int = 10, size: int = 28, seed: int = 0):
    """Class-dependent images (a bright bar whose position encodes the class) plus noise, as uint8."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % num_classes
    rng.shuffle(y)
    x = rng.integers(0, 60, size=(n, size, size)).astype(np.uint8)
    band = max(1, size // num_classes)
    for i, c in enumerate(y):
        r = (c * band) % size
        x[i, r:r + band, :] = 255
    return x, y.astype(np.uint8)


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    xtr, ytr = synthetic_digits(n_train, seed=seed)
    xte, yte = synthetic_digits(n_test, seed=seed + 1)
    write_idx(raw / "train-images-idx3-ubyte", xtr)
    write_idx(raw / "train-labels-idx1-ubyte", ytr)
    write_idx(raw / "t10k-images-idx3-ubyte", xte)
    write_idx(raw / "t10k-labels-idx1-ubyte", yte)
    return raw


def write_cifar(root: Path, num_classes: int = 10, n_train: int = 100, n_test: int = 50, seed: int = 0) -> Path:
    """CIFAR python-version pickles: data (N, 3072) uint8 rows in CHW order, labels lists, meta names."""
    rng = np.random.default_rng(seed)

    def batch(n, label_key):
        y = (np.arange(n) % num_classes).tolist()
        x = rng.integers(0, 255, size=(n, 3, 32, 32), dtype=np.uint8)
        for i, c in enumerate(y):
            x[i, c % 3, :, :] = 255 - (c * 7) % 200
        return {"data": x.reshape(n, 3072), label_key: y, "batch_label": "synthetic"}

    if num_classes == 10:
        d = root / "cifar-10-batches-py"
        d.mkdir(parents=True, exist_ok=True)
        per = n_train // 5
        for i in range(1, 6):
            with open(d / f"data_batch_{i}", "wb") as f:
                pickle.dump(batch(per, "labels"), f)
        with open(d / "test_batch", "wb") as f:
            pickle.dump(batch(n_test, "labels"), f)
        with open(d / "batches.meta", "wb") as f:
            pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    else:
        d = root / "cifar-100-python"
        d.mkdir(parents=True, exist_ok=True)
        for name, n in (("train", n_train), ("test", n_test)):
            with open(d / name, "wb") as f:
                pickle.dump(batch(n, "fine_labels"), f)
        with open(d / "meta", "wb") as f:
            pickle.dump({"fine_label_names": [f"c{i}" for i in range(num_classes)]}, f)
    return d


@pytest.fixture
def mnist_root(tmp_path) -> Path:
    write_mnist(tmp_path / "data")
    write_mnist(tmp_path / "data", folder="FashionMNIST", seed=5)
    return tmp_path / "data"


@pytest.fixture
def cifar_root(tmp_path) -> Path:
    write_cifar(tmp_path / "data", 10)
    write_cifar(tmp_path / "data", 100, n_train=200)
    return tmp_path / "data"


def tensorboard_hparams(folder) -> dict:
    """The HParams plugin's content of every TensorBoard event file under ``folder`` (tag -> bytes)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = {}
    for ev in Path(folder).rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(ev))
        acc.Reload()
        try:
            found.update(acc.PluginTagToContent("hparams"))
        except KeyError:  # an event file without hyper-parameters
            pass
    return found


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a long test (a real browser against real servers: tests/test_browser.py)")


def sampled(cases, keep, unpack: bool = False) -> list:
    """Parametrize values of which only those at the indices ``keep`` run in the fast tier (``-m "not slow"``); the
    others are marked slow, so the full suite still runs every case. For tables of many similar cases; ``unpack``:
    each case is a tuple of several argument names' values."""
    keep, out = set(keep), []
    for i, case in enumerate(cases):
        if i in keep:
            out.append(case)
        elif isinstance(case, type(pytest.param(None))):
            out.append(pytest.param(*case.values, marks=[*case.marks, pytest.mark.slow], id=case.id))
        else:
            out.append(pytest.param(*(case if unpack else (case,)), marks=pytest.mark.slow))
    return out
