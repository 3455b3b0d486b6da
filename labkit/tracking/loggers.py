"""Experiment trackers beyond TensorBoard/CSV: MLflow and Weights & Biases (``logger=mlflow|wandb|many``).

- :class:`MLFlowLogger`: Lightning's, with a local SQLite store under ``paths.log_dir/mlruns`` by default (MLflow 3
  refuses plain-folder stores), its folder created, relative paths made absolute, and the run named after the run
  directory; ``mlflow ui --backend-store-uri sqlite:///<log_dir>/mlruns/mlflow.db`` shows every run.
- :class:`WandbLogger`: Lightning's, offline by default (conf/logger/wandb.yaml), named after the run directory.
- :class:`CSVLogger`: Lightning's, but it continues ``metrics.csv`` on resume (Lightning's deletes it, so a resumed
  run would lose the curves of its first epochs).
- :class:`RunSummary`: a callback that sends the whole composed config (``config/...`` parameters) and the run's
  final figures (best monitored value, parameters, epochs, test error) to every logger of the trainer.

A missing package is a :class:`MissingExtraError` that says what to ``pip install``.
"""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger as _CSVLogger
from pytorch_lightning.loggers import MLFlowLogger as _PLMLFlowLogger
from pytorch_lightning.loggers import WandbLogger as _PLWandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from labkit.core.errors import LabkitError


class MissingExtraError(LabkitError, ImportError):
    """An optional package is not installed."""


def _require(module: str, what: str) -> None:
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules (tests) or a broken install
        found = False
    if not found:
        raise MissingExtraError(f"{what} needs the '{module}' package, which is not installed: pip install {module} "
                                f"(or pip install 'labkit[{module}]'), or choose another logger, e.g. "
                                f"logger=tensorboard")


def _local_uri(path: str) -> str:
    return Path(path).expanduser().resolve().as_uri()


class MLFlowLogger(_PLMLFlowLogger):
    """Lightning's MLFlowLogger. Extra: ``run_dir`` (tagged, and the run's name when ``run_name`` is null)."""

    def __init__(self, experiment_name: str = "labkit", run_name: str | None = None,
                 tracking_uri: str | None = None, artifact_location: str | None = None, run_dir: str | None = None,
                 tags: dict[str, Any] | None = None, **kwargs: Any):
        _require("mlflow", "logger=mlflow")
        if tracking_uri and tracking_uri.startswith("sqlite:///"):
            db = tracking_uri[len("sqlite:///"):]
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
            tracking_uri = "sqlite:///" + str(Path(db).expanduser().resolve())
        elif tracking_uri and "://" not in tracking_uri and not tracking_uri.startswith("file:"):
            tracking_uri = _local_uri(tracking_uri)  # a folder: MLflow's file store (set MLFLOW_ALLOW_FILE_STORE)
        if artifact_location and "://" not in artifact_location and not artifact_location.startswith("file:"):
            artifact_location = _local_uri(artifact_location)
        tags = dict(tags or {})
        if run_dir:
            tags.setdefault("run_dir", str(Path(run_dir).resolve()))
            run_name = run_name or Path(run_dir).name
        super().__init__(experiment_name=experiment_name, run_name=run_name, tracking_uri=tracking_uri,
                         artifact_location=artifact_location, tags=tags or None, **kwargs)


class WandbLogger(_PLWandbLogger):
    """Lightning's WandbLogger, offline unless told otherwise; ``name`` null = the run directory's name."""

    def __init__(self, name: str | None = None, save_dir: str = ".", offline: bool = True, **kwargs: Any):
        _require("wandb", "logger=wandb")
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(name=name or Path(save_dir).name, save_dir=save_dir, offline=offline, **kwargs)
        if self._wandb_init.get("anonymous") is None:  # Lightning always passes it; wandb >= 0.19 warns it is unused
            self._wandb_init.pop("anonymous", None)


def flatten(d: Any, prefix: str = "", out: dict | None = None) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}``; lists become strings; values longer than 250 characters are cut."""
    out = {} if out is None else out
    if isinstance(d, dict):
        for k, v in d.items():
            flatten(v, f"{prefix}/{k}" if prefix else str(k), out)
    else:
        v = d if isinstance(d, (int, float, bool, str)) or d is None else str(d)
        out[prefix] = v[:250] if isinstance(v, str) else v
    return out


class RunSummary(pl.Callback):
    """Send the composed config and the final figures to every logger of the trainer.

    The config is read from ``<run>/config.yaml`` (written by ``train()`` before the trainer is built) and logged as
    parameters under ``config/``; at the end of fit the best monitored value, the parameter counts and the epochs,
    and after the test the test error, are logged as metrics. Nothing happens without a logger.
    """

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.loggers or not trainer.is_global_zero:
            return
        run_dir = Path(trainer.default_root_dir)
        if not (run_dir / "config.yaml").exists():
            return
        from omegaconf import OmegaConf

        from labkit.run import directory

        # the settings as they apply to this run (interpolations resolved: a logger may re-parse strings, and a
        # cut "${paths.output_dir}" is no valid interpolation); the resume history is a record, not a setting
        config = OmegaConf.to_container(directory.load_config(run_dir), resolve=True)
        config.pop("resume_history", None)
        params = flatten({"config": config})
        for lg in trainer.loggers:
            lg.log_hyperparams(params)

    def _log(self, trainer: pl.Trainer, metrics: dict[str, float]) -> None:
        if not trainer.loggers or not trainer.is_global_zero or not metrics:
            return
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=trainer.global_step)
            lg.save()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from labkit.models._shape import count_parameters

        model = getattr(pl_module, "model", pl_module)
        final = {"final/params": float(count_parameters(model)),
                 "final/trainable_params": float(count_parameters(model, trainable_only=True)),
                 "final/epochs": float(trainer.current_epoch)}
        for cb in trainer.checkpoint_callbacks:
            if getattr(cb, "monitor", None) and cb.best_model_score is not None:
                final[f"final/best_{cb.monitor}"] = float(cb.best_model_score)
        self._log(trainer, final)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        m = {f"final/{k}": float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        if "final/test/acc" in m:
            m["final/test/error"] = 100.0 * (1.0 - m["final/test/acc"])
        self._log(trainer, m)


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
