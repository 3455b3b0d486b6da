import numpy as np
import pytest
import torch

from labkit.core.errors import ConfigError, DatasetNotFoundError, IncompatibleError
from labkit.data import CIFAR10DataModule, CIFAR100DataModule, DigitsDataModule, FashionMNISTDataModule, MNISTDataModule


def test_digits_split_is_seeded_stratified_and_disjoint():
    a, b = DigitsDataModule(seed=3), DigitsDataModule(seed=3)
    a.setup(), b.setup()
    assert torch.equal(a.splits["test"].y, b.splits["test"].y)
    sizes = {k: len(v) for k, v in a.splits.items()}
    assert sum(sizes.values()) == 1797 and sizes["test"] == round(0.2 * 1797)
    assert a.splits["train"].x.shape[1:] == (1, 28, 28) and a.splits["train"].x.dtype == torch.uint8
    counts = np.bincount(a.splits["test"].y.numpy(), minlength=10)
    assert counts.min() >= 30  # stratified: every digit present in proportion
    c = DigitsDataModule(seed=4)
    c.setup()
    assert not torch.equal(a.splits["test"].x, c.splits["test"].x)


def test_mnist_idx_files_load_through_the_module(mnist_root):
    dm = MNISTDataModule(data_dir=str(mnist_root), val_size=20, batch_size=32, mean=[0.1307], std=[0.3081])
    dm.setup()
    assert len(dm.splits["train"]) == 180 and len(dm.splits["val"]) == 20 and len(dm.splits["test"]) == 100
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (32, 1, 28, 28)
    out = dm.transform(x, train=False)
    assert out.dtype == torch.float32
    assert torch.allclose(out[0, 0, 0, 0], (x[0, 0, 0, 0] / 255.0 - 0.1307) / 0.3081)
    fm = FashionMNISTDataModule(data_dir=str(mnist_root), val_size=10)
    fm.setup()
    assert len(fm.splits["test"]) == 100 and fm.classes[0] == "T-shirt/top"


def test_cifar_pickles_load_with_notes_transforms(cifar_root):
    dm = CIFAR10DataModule(data_dir=str(cifar_root), channels=3, image_size=28, num_classes=10, val_size=10,
                           augment=True, mean=[0.4914, 0.4822, 0.4465], std=[0.2023, 0.1994, 0.2010])
    dm.setup()
    assert dm.splits["train"].x.shape[1:] == (3, 32, 32) and dm.classes[0] == "class0"
    x, _ = next(iter(dm.train_dataloader()))
    assert dm.transform(x, train=True).shape[-2:] == (28, 28)
    assert dm.transform(x, train=False).shape[-2:] == (28, 28)  # centre crop at test time
    c100 = CIFAR100DataModule(data_dir=str(cifar_root), channels=3, image_size=32, num_classes=100, val_size=0)
    c100.setup()
    assert len(c100.splits["train"]) == 200 and len(c100.splits["val"]) == 0 and c100.classes[5] == "c5"


def test_missing_dataset_names_path_and_remedy(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError) as e:
        dm.setup()
    msg = str(e.value)
    assert "MNIST/raw" in msg and "train-images-idx3-ubyte" in msg and "data.download=true" in msg
    cf = CIFAR100DataModule(data_dir=str(tmp_path), channels=3, num_classes=100)
    with pytest.raises(DatasetNotFoundError, match="cifar-100-python"):
        cf.setup()


def test_truncated_idx_file_is_reported(mnist_root):
    p = mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated"):
        MNISTDataModule(data_dir=str(mnist_root)).setup()


def test_bad_values_fail_at_construction(mnist_root):
    with pytest.raises(ConfigError, match="batch_size=0"):
        DigitsDataModule(batch_size=0)
    with pytest.raises(ConfigError, match="mean"):
        DigitsDataModule(mean=[0.1, 0.2])
    with pytest.raises(IncompatibleError, match="3-channel|1-channel"):
        MNISTDataModule(data_dir=str(mnist_root), channels=3).setup()
