"""A search's trial in its job: :class:`TrialReporter` (a Lightning callback the sweeper switches on through the
job's overrides: ``++callbacks.optuna_trial={_target_: labkit.callbacks.TrialReporter, trial: N, ...}``) reports
the validation metric to the study after every epoch and asks the study's pruner; a hopeless trial ends with
:class:`TrialPruned`, a :class:`labkit.core.errors.RunStopped` whose status is ``pruned``, so the run core records
``{"status": "pruned", "stopped_at_epoch": N}`` in metrics.json instead of a failure."""
from __future__ import annotations

import logging
import math
from typing import Any, Mapping

import pytorch_lightning as pl

from labkit.core import checks
from labkit.core.errors import RunStopped
from labkit.core.values import resolved
from labkit.loggers.optuna import make_pruner, open_storage, pruner_name

log = logging.getLogger("labkit")

PRUNED_ATTR = "labkit_pruned_at_epoch"


class TrialPruned(RunStopped):
    """A search's pruner stopped this trial: metrics.json says ``pruned`` with the epoch, not ``failed``."""

    status = "pruned"



class TrialReporter(pl.Callback):
    """Reports a trial's validation metric to its Optuna study after every epoch and stops the run with
    :class:`TrialPruned` when the study's pruner says so. The sweeper adds it to each job
    (``++callbacks.optuna_trial={...}``); the run core needs nothing else.

    ``storage``: the study's storage (journal file or SQLAlchemy URL); ``study_name``; ``trial``: the trial number;
    ``monitor``: the metric reported (default: the task's ``monitor``); ``mode``: ``max`` or ``min``, the metric's
    better direction (values are negated when it differs from the study's direction, so the pruner compares them the
    right way round); ``pruner``, ``pruner_args``: as ``hydra.sweeper.pruner`` / ``pruner_args``. Under DDP only
    global rank 0 talks to the study and tells the other ranks."""

    def __init__(self, storage: str, study_name: str, trial: int, monitor: str | None = None,
                 mode: str | None = None, pruner: Any = "none", pruner_args: Mapping | None = None):
        super().__init__()
        checks.non_negative_int("callbacks.optuna_trial.trial", trial)
        if mode is not None:
            checks.one_of("callbacks.optuna_trial.mode", mode, ("min", "max"))
        self.storage, self.study_name, self.number = str(storage), str(study_name), int(trial)
        self.monitor, self.mode = monitor, mode
        self.pruner, self.pruner_args = resolved(pruner), dict(resolved(pruner_args) or {})
        self._trial = None
        self._sign = 1.0
        self._reported: set[int] = set()
        self._missing_warned = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        # a labkit task's (metric, mode) (labkit.tasks.base.LabTask.monitor; the tasks are a layer above the callbacks)
        monitor = getattr(pl_module, "monitor", None)
        task_metric, task_mode = tuple(monitor) if isinstance(monitor, tuple) and len(monitor) == 2 else (None, None)
        if self.monitor is None:
            self.monitor, self.mode = task_metric, self.mode or task_mode
        if self.mode is None:
            self.mode = task_mode if self.monitor == task_metric else "max"
        if trainer.is_global_zero and self._trial is None:
            import optuna

            storage = open_storage(self.storage)
            study = optuna.load_study(study_name=self.study_name, storage=storage,
                                      sampler=optuna.samplers.RandomSampler(),
                                      pruner=make_pruner(self.pruner, self.pruner_args))
            study_id = storage.get_study_id_from_name(self.study_name)  # the storage's public API (BaseStorage)
            self._trial = optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id,
                                                                                                   self.number))
            maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
            self._sign = 1.0 if (self.mode == "max") == maximize else -1.0

    def _report(self, value: float, epoch: int) -> bool:
        """Report to the study and ask its pruner. A trial the study already closed (another worker released it
        as abandoned while its sweeper was silent, e.g. a SLURM job that outlived its sweeper) is no reason to stop
        this run: it goes on, unreported, and says so once."""
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            self._trial.report(value, epoch)
            return bool(self._trial.should_prune())
        except UpdateFinishedTrialError:
            log.warning("trial %d was closed in the study meanwhile (released as abandoned by another worker?): this "
                        "run goes on, its epochs are no longer reported", self.number)
            self._trial = None
            return False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor is None:
            return
        epoch = int(trainer.current_epoch)
        if epoch in self._reported:
            return
        self._reported.add(epoch)
        prune, shown = False, None
        if trainer.is_global_zero and self._trial is not None:
            value = trainer.callback_metrics.get(self.monitor)
            if value is None:
                if not self._missing_warned:
                    log.warning("trial %d: %s is not among the logged metrics (%s): nothing reported to the study, "
                                "so it cannot be pruned", self.number, self.monitor,
                                ", ".join(sorted(trainer.callback_metrics)))
                    self._missing_warned = True
            else:
                shown = float(value)
                if math.isfinite(shown):
                    prune = self._report(self._sign * shown, epoch)
        prune = trainer.strategy.broadcast(prune, src=0)
        if prune:
            if self._trial is not None:
                self._trial.set_user_attr(PRUNED_ATTR, epoch)
            figure = f"{self.monitor} = {shown:.4g}" if shown is not None else self.monitor
            raise TrialPruned(f"trial {self.number}: the {pruner_name(self.pruner)} pruner stopped it after epoch "
                              f"{epoch} ({figure})", epoch=epoch)
