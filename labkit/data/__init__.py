"""LightningDataModules. Add a dataset: one module here plus ``conf/data/<name>.yaml``.

``base`` (LabDataModule: the contract), ``batches`` (PairBatch, TripletBatch), ``sampling`` (batch samplers,
pairs and triplets), ``memory`` (InMemoryImageDataModule, Split, holdout), ``augment`` (batch transforms);
datasets: ``vision`` (digits, MNIST, Fashion-MNIST, CIFAR), ``folder`` (class folders of image files, with
``files`` and ``splits`` for their files and saved splits), ``caltech`` (Caltech101), ``egocart``.
"""
from labkit.data.base import LabDataModule
from labkit.data.batches import PairBatch, TripletBatch
from labkit.data.caltech import Caltech101DataModule
from labkit.data.egocart import EgoCartDataModule
from labkit.data.folder import ImageFolderDataModule
from labkit.data.memory import InMemoryImageDataModule, Split
from labkit.data.vision import (
                                CIFAR10DataModule,
                                CIFAR100DataModule,
                                DigitsDataModule,
                                FashionMNISTDataModule,
                                MNISTDataModule,
)

__all__ = ["LabDataModule", "InMemoryImageDataModule", "Split", "PairBatch", "TripletBatch", "DigitsDataModule",
           "MNISTDataModule", "FashionMNISTDataModule", "CIFAR10DataModule", "CIFAR100DataModule",
           "ImageFolderDataModule", "Caltech101DataModule", "EgoCartDataModule"]


def __getattr__(name: str):
    # old module paths that saved configs name (labkit.data.tensor, labkit.data.samplers: labkit/_compat.py)
    if name.startswith("_"):  # (the import system's own questions, e.g. while importing labkit._compat itself)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import labkit._compat

    return labkit._compat.moved_module(__name__, name)
