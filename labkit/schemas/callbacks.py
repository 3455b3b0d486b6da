"""Schemas of the callbacks a run attaches (``conf/callbacks/``): labkit's and Lightning's."""
from __future__ import annotations

from typing import Any, Mapping, Optional

from labkit.core import checks
from labkit.schemas.base import MISSING, schema


@schema("labkit.callbacks.RunCheckpoint", "callbacks")
class RunCheckpoint:
    """Lightning's ModelCheckpoint with atomic writes; monitor/mode null = the task's own choice."""

    dirpath: Optional[str] = None  # the checkpoints folder (paths.output_dir/checkpoints)
    filename: Optional[str] = None  # file name pattern, e.g. epoch{epoch:03d}
    monitor: Optional[str] = None  # the metric that picks the best checkpoint (null: the task's monitor)
    verbose: bool = False  # log each save
    save_last: Any = None  # also keep last.ckpt
    save_top_k: int = 1  # how many best checkpoints to keep
    save_weights_only: bool = False  # weights only (no optimizer state: cannot resume)
    mode: Optional[str] = "min"  # min or max (null: the task's)
    auto_insert_metric_name: bool = True  # put the metric's name in the file name
    every_n_train_steps: Optional[int] = None  # also save every N training steps (last.ckpt: inside epochs too)
    every_minutes: Optional[float] = None  # also save every N minutes of training (last.ckpt: inside epochs too)
    save_on_stop: bool = False  # save at the step where a SIGTERM/SIGUSR1 stops the run (resume continues there)
    train_time_interval: Any = None  # also save every interval of wall time
    every_n_epochs: Optional[int] = None  # save every N epochs
    save_on_train_epoch_end: Optional[bool] = None  # save at the end of the training epoch instead of validation
    enable_version_counter: bool = True  # add -v1, -v2 to a name that exists

    @staticmethod
    def check(a: Mapping[str, Any], at: str = "callbacks.model_checkpoint") -> None:
        """save_top_k is an integer >= -1 (-1: all, 0: none); mode min, max or null; the save intervals are
        positive or null."""
        checks.integer(f"{at}.save_top_k", a["save_top_k"], minimum=-1, hint="-1 keeps every checkpoint, 0 none")
        checks.one_of(f"{at}.mode", a["mode"], ("min", "max", None))
        for key in ("every_n_train_steps", "every_n_epochs"):
            checks.non_negative_int(f"{at}.{key}", a[key], optional=True, hint="0 or null: not used")
        checks.positive(f"{at}.every_minutes", a["every_minutes"], optional=True)


@schema("labkit.callbacks.EpochSeed", "callbacks")
class EpochSeed:
    """Reseed at every epoch start from (seed, epoch): resumed runs continue bit for bit."""

    seed: Optional[int] = 0  # the run's seed


@schema("labkit.callbacks.FiniteLossGuard", "callbacks")
class FiniteLossGuard:
    """Stop cleanly on a NaN/inf loss, naming the step."""

    check_every: int = 20  # steps between reads of the device-side flag


@schema("labkit.callbacks.History", "callbacks")
class History:
    """history.csv (one row per epoch), learning_curves.png at the end, one log line per epoch."""

    dirpath: str = MISSING  # the run directory
    plot: bool = True  # draw learning_curves.png at the end


@schema("labkit.callbacks.progress_bar", "callbacks")
class ProgressBar:
    """Lightning's bar on a terminal; plain lines in a file, a pipe or a scheduler's log."""

    refresh_rate: int = 10  # batches between bar updates
    plain: Any = None  # null: plain lines when output is not a terminal; true/false: always
    every_n_steps: Optional[int] = None  # a plain line every N batches
    every_s: Optional[float] = 30.0  # a plain line every N seconds
    name: str = ""  # shown before "epoch N" (a sweep job's number and overrides)


@schema("labkit.callbacks.ModelSummary", "callbacks")
class ModelSummary:
    """Lightning's model summary without its FLOPs column."""

    max_depth: int = 1  # module depth shown (0 = off)
    enabled: bool = True  # false turns it off


@schema("labkit.callbacks.RunSummary", "callbacks")
class RunSummary:
    """The composed config and the final figures to every logger."""


@schema("pytorch_lightning.callbacks.LearningRateMonitor", "callbacks")
class LearningRateMonitor:
    """Lightning's learning-rate logger."""

    logging_interval: Optional[str] = None  # epoch or step (null: the scheduler's interval)
    log_momentum: bool = False  # also log the momentum


@schema("pytorch_lightning.callbacks.EarlyStopping", "callbacks")
class EarlyStopping:
    """Lightning's early stopping on a monitored metric."""

    monitor: str = MISSING  # a metric the task logs, e.g. val/loss
    min_delta: float = 0.0  # the smallest change that counts as an improvement
    patience: int = 3  # validation checks without improvement before stopping
    verbose: bool = False  # log each check
    mode: str = "min"  # min or max
    strict: bool = True  # fail when the metric is not logged
    check_finite: bool = True  # stop when the metric becomes NaN or infinite
    stopping_threshold: Optional[float] = None  # stop as soon as the metric reaches this value
    divergence_threshold: Optional[float] = None  # stop as soon as the metric is worse than this value
    check_on_train_epoch_end: Optional[bool] = None  # check at the end of the training epoch

    @staticmethod
    def check(a: Mapping[str, Any], at: str = "callbacks.early_stopping") -> None:
        """patience is an integer >= 0; min_delta a number >= 0; mode min or max."""
        checks.non_negative_int(f"{at}.patience", a["patience"], hint="validation checks without improvement")
        checks.non_negative(f"{at}.min_delta", a["min_delta"], hint="the smallest change that counts as an improvement")
        checks.one_of(f"{at}.mode", a["mode"], ("min", "max"))
