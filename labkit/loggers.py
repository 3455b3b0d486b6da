"""Loggers that keep a run's history when the run is continued.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts, so a resumed run would lose the
curves of its first epochs; :class:`CSVLogger` here appends to it instead (the header grows when new metrics
appear, the rows already written are kept).
"""
from __future__ import annotations

import csv

from pytorch_lightning.loggers import CSVLogger as _CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities.rank_zero import rank_zero_only


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])


class CSVLogger(_CSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` that continues ``metrics.csv`` on resume instead of deleting it."""

    @property
    @rank_zero_only
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
