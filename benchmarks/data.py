"""Benchmark data in the genuine on-disk formats (random content: only throughput is measured).

- MNIST: the four IDX files under ``<root>/MNIST/raw`` (torchvision's layout), 60,000 + 10,000 images 28x28.
- CIFAR-10: the python pickle batches under ``<root>/cifar-10-batches-py`` (``data_batch_1..5``, ``test_batch``,
  ``batches.meta``), 50,000 + 10,000 images 3x32x32, rows of 3,072 bytes in CHW order.

The writers follow ``tests/conftest.py`` (``write_idx`` / ``write_cifar``) at full size.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from labkit.data.vision import write_idx


def write_mnist(root: Path, n_train: int = 60_000, n_test: int = 10_000, seed: int = 0) -> Path:
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, size=n, dtype=np.uint8))
    return raw


def write_cifar10(root: Path, n_train: int = 50_000, n_test: int = 10_000, seed: int = 0) -> Path:
    d = Path(root) / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def batch(n: int, name: str) -> dict:
        return {"batch_label": name, "labels": rng.integers(0, 10, size=n).tolist(),
                "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                "filenames": [f"{name}_{i}.png" for i in range(n)]}

    per = n_train // 5
    for i in range(1, 6):
        with open(d / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(per, f"training batch {i} of 5"), f)
    with open(d / "test_batch", "wb") as f:
        pickle.dump(batch(n_test, "testing batch 1 of 1"), f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"], "num_cases_per_batch": per, "num_vis": 3072}, f)
    return d


def ensure(root: Path) -> Path:
    """Write both datasets under ``root`` unless they are already there."""
    root = Path(root)
    if not (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").exists():
        write_mnist(root)
    if not (root / "cifar-10-batches-py" / "batches.meta").exists():
        write_cifar10(root)
    return root
