"""Schemas of the experiment loggers (``conf/logger/``)."""
from __future__ import annotations

from typing import Any, ClassVar, Dict, Mapping, Optional

from labkit.core import checks
from labkit.core.servers import CONNECT_TIMEOUT_S
from labkit.schemas.base import MISSING, schema

SQLITE_BUSY_TIMEOUT_S = 60.0  # seconds a write to a SQLite store waits for another process's lock


def check_log_model(key: str, value: Any) -> None:
    """``log_model``: true, false or "all"."""
    if value not in (True, False, "all"):
        raise checks.invalid(key, value, "true (the best model at the end of training), false, or 'all' (also every "
                             "checkpoint file as it is saved)")


def check_connect_timeout(key: str, value: Any) -> None:
    """A logger's ``connect_timeout_s``: seconds > 0, or null (no check)."""
    checks.positive(key, value, optional=True, hint=f"the seconds to wait for the tracking server before training "
                    f"(default {CONNECT_TIMEOUT_S:g}), or null to skip the check")


def check_busy_timeout(key: str, value: Any) -> None:
    """``busy_timeout_s`` of a SQLite store: seconds > 0, or null (fail at once)."""
    checks.positive(key, value, optional=True, hint=f"the seconds a write to the SQLite store waits for another "
                    f"process's lock (default {SQLITE_BUSY_TIMEOUT_S:g}), or null to fail at once")


@schema("pytorch_lightning.loggers.TensorBoardLogger", "logger")
class TensorBoardLogger:
    """TensorBoard event files in the run directory (tensorboard --logdir logs)."""

    save_dir: str = MISSING  # the run directory
    name: Optional[str] = "lightning_logs"  # sub-folder
    version: Any = None  # sub-sub-folder ("" for a single run, a sweep job's name)
    log_graph: bool = False  # add the network's graph
    default_hp_metric: bool = True  # log a placeholder hp_metric
    prefix: str = ""  # prefix of every metric name
    sub_dir: Optional[str] = None  # a further sub-folder


@schema("labkit.loggers.CSVLogger", "logger")
class CSVLogger:
    """metrics.csv in the run directory, continued on resume."""

    save_dir: str = MISSING  # the run directory
    name: Optional[str] = "lightning_logs"  # sub-folder
    version: Any = None  # sub-sub-folder ("" for none)
    prefix: str = ""  # prefix of every metric name
    flush_logs_every_n_steps: int = 100  # steps between writes


@schema("labkit.loggers.MLFlowLogger", "logger")
class MLFlowLogger:
    """MLflow (pip install mlflow): a local SQLite store by default, or a tracking server."""

    experiment_name: str = "labkit"  # the MLflow experiment
    run_name: Optional[str] = None  # null: the run directory's name
    tracking_uri: Optional[str] = None  # sqlite:///..., file:..., http(s)://server
    artifact_location: Optional[str] = None  # where the experiment's artifacts go
    run_dir: Optional[str] = None  # the run directory (tagged)
    tags: Optional[Dict[str, Any]] = None  # extra tags of the MLflow run
    connect_timeout_s: Optional[float] = CONNECT_TIMEOUT_S  # a remote server is checked first (null: no check)
    busy_timeout_s: Optional[float] = SQLITE_BUSY_TIMEOUT_S  # a SQLite store: seconds a write waits for a lock (null: none)
    save_dir: Optional[str] = "./mlruns"  # (Lightning's file store, when tracking_uri is null)
    log_model: Any = True  # the best model at the end of training as an MLflow model; all: every checkpoint too
    prefix: str = ""  # prefix of every metric name
    run_id: Optional[str] = None  # continue this MLflow run

    @staticmethod
    def check(a: Mapping[str, Any], at: str = "logger.mlflow") -> None:
        """connect_timeout_s and busy_timeout_s are seconds > 0 or null; log_model true, false or all."""
        check_connect_timeout(f"{at}.connect_timeout_s", a["connect_timeout_s"])
        check_busy_timeout(f"{at}.busy_timeout_s", a["busy_timeout_s"])
        check_log_model(f"{at}.log_model", a["log_model"])


@schema("labkit.loggers.WandbLogger", "logger")
class WandbLogger:
    """Weights & Biases (pip install wandb), offline unless told otherwise."""

    #: fields the constructor hands on to ``wandb.init`` through ``**kwargs``
    passed_on: ClassVar[tuple[str, ...]] = ("entity", "group", "tags", "notes", "job_type")

    name: Optional[str] = None  # the W&B run's name (null: the run directory's name)
    save_dir: str = "."  # the run directory
    offline: bool = True  # false: sync to the W&B server
    connect_timeout_s: Optional[float] = CONNECT_TIMEOUT_S  # the server is checked first when online (null: no check)
    version: Optional[str] = None  # the W&B run id to continue
    dir: Optional[str] = None  # (same as save_dir)
    id: Optional[str] = None  # the W&B run id (same as version)
    anonymous: Optional[bool] = None  # anonymous logging
    project: Optional[str] = None  # the W&B project
    log_model: Any = True  # the best checkpoint as a W&B model artifact; all: every checkpoint too; false: none
    prefix: str = ""  # prefix of every metric name
    checkpoint_name: Optional[str] = None  # the checkpoint artifact's name
    entity: Optional[str] = None  # the W&B team or user
    group: Optional[str] = None  # group runs (e.g. a sweep)
    tags: Optional[Any] = None  # tags of the W&B run
    notes: Optional[str] = None  # a description of the run
    job_type: Optional[str] = None  # e.g. train

    @staticmethod
    def check(a: Mapping[str, Any], at: str = "logger.wandb") -> None:
        """connect_timeout_s is seconds > 0 or null; log_model true, false or all."""
        check_connect_timeout(f"{at}.connect_timeout_s", a["connect_timeout_s"])
        check_log_model(f"{at}.log_model", a["log_model"])
