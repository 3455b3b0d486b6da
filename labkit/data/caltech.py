"""Caltech101 (note 000): 101 object categories in class folders, read by :class:`ImageFolderDataModule`."""
from __future__ import annotations

import os
from pathlib import Path

from labkit.core.errors import DatasetNotFoundError
from labkit.data.folder import ImageFolderDataModule

CALTECH101_PAGE = "https://data.caltech.edu/records/mzrjq-6wc02"


class Caltech101DataModule(ImageFolderDataModule):
    """Caltech101 (note 000): 101 object categories, ``BACKGROUND_Google`` excluded, grey images made RGB.

    Looks for ``<data_dir>/caltech101/101_ObjectCategories`` (torchvision's layout), then
    ``<data_dir>/101_ObjectCategories``; ``root`` may name either that folder or a folder holding it.
    ``download: true`` tries torchvision's ``Caltech101(download=True)`` (Google Drive, needs ``gdown``,
    often rate-limited).
    """

    name = "caltech101"
    default_exclude = ("BACKGROUND_Google",)
    folder = "101_ObjectCategories"

    def __init__(self, download: bool = False, num_classes: int = 101, **kwargs):
        super().__init__(num_classes=num_classes, **kwargs)
        self.download = download

    def _candidates(self) -> list[Path]:
        if self.root:
            r = Path(str(self.root)).expanduser()
            return [r / "caltech101" / self.folder, r / self.folder, r]
        d = Path(self.data_dir).expanduser()
        return [d / "caltech101" / self.folder, d / "Caltech101" / self.folder, d / self.folder]

    def find_root(self) -> Path | None:
        for c in self._candidates():
            if c.is_dir() and c.name == self.folder:
                return c
        if self.root:  # any folder of category folders given explicitly (e.g. the notes' Caltech101/images)
            r = Path(str(self.root)).expanduser()
            if r.is_dir() and not (r / "caltech101").exists() and any(
                    e.is_dir() and not e.name.startswith(".") for e in os.scandir(r)):
                return r
        return None

    def check_available(self) -> None:
        if not self.download:  # else prepare_data downloads it
            super().check_available()

    def _not_found(self) -> DatasetNotFoundError:
        cands = self._candidates()
        archives = [p for c in cands for p in (c.parent / f"{self.folder}.tar.gz",) if p.exists()]
        hint = (f" Found the archive {archives[0]}: extract it there (tar xzf {archives[0].name})." if archives else "")
        return DatasetNotFoundError(
            f"caltech101 not found: looked for {', '.join(str(c.resolve()) for c in cands)}.{hint} Expected layout: "
            f"<data_dir>/caltech101/{self.folder}/<category>/image_0001.jpg (102 folders; BACKGROUND_Google is left "
            f"out). Get caltech-101.zip from the official page {CALTECH101_PAGE}, unzip it and extract "
            f"{self.folder}.tar.gz into <data_dir>/caltech101/, or run once with data.download=true (torchvision's "
            "Google Drive download, needs the gdown package and often fails upstream). data.data_dir or data.root "
            "sets where to look.")

    def prepare_data(self) -> None:
        if not self.download or self.find_root() is not None:
            return
        import torchvision.datasets as tvd

        try:
            tvd.Caltech101(root=str(self.root or self.data_dir), target_type="category", download=True)
        except Exception as e:  # network, gdown or archive errors
            raise DatasetNotFoundError(f"downloading caltech101 failed ({type(e).__name__}: {e}). "
                                       + str(self._not_found())) from None
