"""LightningDataModules. Add a dataset: one module here plus ``conf/data/<name>.yaml``."""
from labkit.data.base import LabDataModule
from labkit.data.egocart import EgoCartDataModule
from labkit.data.folder import Caltech101DataModule, ImageFolderDataModule
from labkit.data.tensor import InMemoryImageDataModule
from labkit.data.vision import (CIFAR10DataModule, CIFAR100DataModule, DigitsDataModule, FashionMNISTDataModule,
                                MNISTDataModule)

__all__ = ["LabDataModule", "InMemoryImageDataModule", "DigitsDataModule", "MNISTDataModule",
           "FashionMNISTDataModule", "CIFAR10DataModule", "CIFAR100DataModule", "ImageFolderDataModule",
           "Caltech101DataModule", "EgoCartDataModule"]
