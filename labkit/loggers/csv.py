"""CSV (``logger=csv``): :class:`CSVLogger`, Lightning's, but it continues ``metrics.csv`` on resume (Lightning's
deletes it, so a resumed run would lose the curves of its first epochs)."""
from __future__ import annotations

import logging

from pytorch_lightning.loggers import CSVLogger as _CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from labkit.adapters import lightning as lightning_internals

log = logging.getLogger("labkit")



class CSVLogger(_CSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` that continues ``metrics.csv`` on resume instead of deleting it."""

    @property
    @rank_zero_only
    def experiment(self) -> ExperimentWriter:
        return lightning_internals.appending_csv_experiment(self)
