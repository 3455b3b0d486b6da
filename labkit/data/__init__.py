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
