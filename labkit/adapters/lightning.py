"""Lightning (``pytorch_lightning``) internals labkit needs. Nothing here imports Lightning (nor torch) until a function
is called, or :class:`AppendingExperimentWriter` is first looked up."""
from __future__ import annotations

from typing import Any


# ----- CSVLogger: continue metrics.csv ------------------------------------------------------------------------------
def appending_csv_experiment(logger: Any) -> Any:
    """The ``ExperimentWriter`` of ``logger`` (a ``pytorch_lightning.loggers.CSVLogger``), made on first use as an
    :class:`AppendingExperimentWriter`: a resumed run continues its ``metrics.csv`` instead of deleting it.

    Why private: the logger makes its writer on first use and keeps it in ``_experiment`` (``finalize`` and ``save``
    read it there) after creating its folder through its filesystem ``_fs``; there is no public way to give it
    another writer class (see :class:`AppendingExperimentWriter` for the writer's own)."""
    if logger._experiment is None:
        logger._fs.makedirs(logger.root_dir, exist_ok=True)
        logger._experiment = _writer_class()(log_dir=logger.log_dir)
    return logger._experiment


def _writer_class() -> type:
    """:class:`AppendingExperimentWriter`, built on first use (importing this module must not import Lightning)."""
    cls = globals().get("AppendingExperimentWriter")
    if cls is None:
        cls = globals()["AppendingExperimentWriter"] = _build_writer_class()
    return cls


def _build_writer_class() -> type:
    import csv

    from pytorch_lightning.loggers.csv_logs import ExperimentWriter

    class AppendingExperimentWriter(ExperimentWriter):
        """Lightning's CSV ``ExperimentWriter``, but an existing ``metrics.csv`` is kept and continued: its columns
        are read (``metrics_keys``) so that new rows are appended under the same header.

        Why private: the writer's constructor calls ``_check_log_dir_exists``, which deletes an existing metrics.csv,
        on its filesystem ``_fs``; overriding it is the only way to keep the file."""

        def _check_log_dir_exists(self) -> None:
            if self._fs.isfile(self.metrics_file_path):
                with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                    self.metrics_keys = list(csv.DictReader(f).fieldnames or [])

    AppendingExperimentWriter.__module__ = __name__  # picklable as labkit.adapters.lightning.AppendingExperimentWriter
    AppendingExperimentWriter.__qualname__ = "AppendingExperimentWriter"
    return AppendingExperimentWriter


def __getattr__(name: str) -> Any:
    if name == "AppendingExperimentWriter":
        return _writer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----- MLFlowLogger: log into an existing run -----------------------------------------------------------------------
def mlflow_client(logger: Any) -> Any:
    """The ``MlflowClient`` a ``pytorch_lightning.loggers.MLFlowLogger`` made for its tracking URI, without starting a
    run.

    Why private: the logger keeps it in ``_mlflow_client``; its public ``experiment`` returns the same client but
    first creates (starts) the logger's run, which looking up an existing run to continue must not."""
    return logger._mlflow_client


def mlflow_run_id(logger: Any) -> str | None:
    """The id of the MLflow run a ``MLFlowLogger`` logs into, None while it has none yet, without starting one.

    Why private: the logger keeps it in ``_run_id``; its public ``run_id`` property first creates (starts) the run."""
    return logger._run_id


def mlflow_use_run(logger: Any, run_id: str | None) -> None:
    """Make a ``MLFlowLogger`` that has not started its run yet log into the existing run ``run_id`` (None: a new run
    on first use).

    Why private: Lightning takes ``run_id`` only as a constructor argument and keeps it in ``_run_id``; labkit learns
    the run's id after building the logger, from the logger's own client (:func:`mlflow_client`)."""
    logger._run_id = run_id


# ----- WandbLogger: wandb.init's arguments, the run once started ----------------------------------------------------
def wandb_init_kwargs(logger: Any) -> dict:
    """The keyword arguments a ``pytorch_lightning.loggers.WandbLogger`` will pass to ``wandb.init`` when it starts its
    run: the logger's own dict, so changes made before the run starts (settings, a dropped ``anonymous``) apply.

    Why private: the logger keeps them in ``_wandb_init`` (its arguments, Lightning's defaults such as
    ``anonymous=None`` and the extra keyword arguments merged) and exposes them nowhere else."""
    return logger._wandb_init


def wandb_run_if_started(logger: Any) -> Any | None:
    """The W&B run a ``WandbLogger`` has started (or attached to), None when it has not started one yet.

    Why private: the logger keeps it in ``_experiment``; its public ``experiment`` starts a run when there is none."""
    return logger._experiment


# ----- ModelCheckpoint: a save at the current step -----------------------------------------------------------------------
def save_unmonitored_checkpoint_now(callback: Any, trainer: Any) -> bool:
    """Write a ``ModelCheckpoint`` without a monitor (``last.ckpt``) at the trainer's current step, unless that step
    was saved already; True when it wrote.

    Why private: ModelCheckpoint has no public "save now"; its own ``every_n_train_steps`` excludes its per-epoch save,
    and labkit's last.ckpt needs both (mid-epoch saves and one after every epoch). These are the very methods
    ModelCheckpoint's own step trigger calls."""
    if trainer.global_step == callback._last_global_step_saved:
        return False
    callback._save_none_monitor_checkpoint(trainer, callback._monitor_candidates(trainer))
    return True

