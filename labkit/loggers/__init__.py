"""labkit's logger adapters (like ``pytorch_lightning.loggers``), one module per idea; a config names them as
``_target_: labkit.loggers.<Class>``.

- :mod:`~labkit.loggers.base`: what the adapters share (a missing package's message, a tracking server that goes away
  during the run, :func:`close`)
- :mod:`~labkit.loggers.csv`: :class:`CSVLogger`, which continues ``metrics.csv`` on resume
- :mod:`~labkit.loggers.mlflow`: :class:`MLFlowLogger`, a local SQLite store by default
- :mod:`~labkit.loggers.wandb`: :class:`WandbLogger`, offline by default
- :mod:`~labkit.loggers.sqlite`: a local SQLite store shared by parallel writers (MLflow's)
- :mod:`~labkit.loggers.optuna`, :mod:`~labkit.loggers.journal`: an Optuna study's storage and pruner

A finished run's loggers are opened again by :mod:`labkit.tracking.reopen`. Old paths
(``labkit.tracking.loggers.MLFlowLogger``, ...) are answered by :mod:`labkit._compat`.
"""
from labkit.loggers.base import MissingExtraError, close
from labkit.loggers.csv import CSVLogger
from labkit.loggers.mlflow import MLFLOW_HTTP_DEFAULTS, MLFlowLogger
from labkit.loggers.sqlite import prepare_sqlite_store, retry_locked, sqlite_store
from labkit.loggers.wandb import WandbLogger
from labkit.schemas.loggers import SQLITE_BUSY_TIMEOUT_S

__all__ = ["CSVLogger", "MLFLOW_HTTP_DEFAULTS", "MLFlowLogger", "MissingExtraError", "SQLITE_BUSY_TIMEOUT_S",
           "WandbLogger", "close", "prepare_sqlite_store", "retry_locked", "sqlite_store"]


def __getattr__(name: str):
    import labkit._compat

    return labkit._compat.moved_attribute(__name__, name)  # RunSummary, send_pictures... (labkit.tracking.loggers's)
