"""Base LightningModule of every labkit task.

A task owns a network (rebuilt from its config dict, so checkpoints are self-contained), a loss,
metrics and the optimizer/scheduler configs. It declares which samples it needs
(:attr:`sampling`) and which metric picks the best checkpoint (:attr:`monitor`).
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from labkit.core import checks
from labkit.core.errors import ConfigError, IncompatibleError
from labkit.models._shape import count_parameters
from labkit.models.build import as_dict, build_model
from labkit.tasks.finetuning import check_finetune_args, finetuning_callbacks

log = logging.getLogger(__name__)


def per_stage(*names: str, stages: tuple[str, ...] = ("train", "val", "test")) -> tuple[str, ...]:
    """``("train/<name>", "val/<name>", "test/<name>", ...)``: metric names for :attr:`LabTask.logged_metrics`."""
    return tuple(f"{s}/{n}" for s in stages for n in names)


class LabTask(pl.LightningModule):
    """What every task has: the network (``model``, a config dict), the optimizer and scheduler configs, ``compile``
    and the transfer-learning options (``freeze``, ``unfreeze_at_epoch``, ``unfreeze_lr_factor``).

    One constructor style: a subclass takes ``model``, then only its own options, then ``**kwargs`` for these
    common ones, which it passes on with ``super().__init__(model, **kwargs)``."""

    sampling = "single"
    monitor = ("val/loss", "min")
    # every metric name the task logs with self.log (what a callback's monitor may name, checked at config time);
    # empty = not declared, nothing checked. A subclass that logs more extends its parent's tuple.
    logged_metrics: tuple[str, ...] = ()

    def __init__(self, model: Mapping[str, Any], optimizer: Mapping[str, Any] | None = None,
                 scheduler: Mapping[str, Any] | None = None, scheduler_interval: str = "epoch",
                 compile: bool = False, freeze: str | None = None, unfreeze_at_epoch: int | None = None,
                 unfreeze_lr_factor: float = 0.1):
        super().__init__()
        LabTask.check_args(locals())
        freeze = None if freeze is False else freeze
        self.save_hyperparameters({"model": as_dict(model), "optimizer": as_dict(optimizer),
                                   "scheduler": as_dict(scheduler), "scheduler_interval": scheduler_interval,
                                   "compile": compile, "freeze": freeze, "unfreeze_at_epoch": unfreeze_at_epoch,
                                   "unfreeze_lr_factor": unfreeze_lr_factor})
        self.hparams.model.pop("init_from", None)  # stored by labkit < 0.2, whose weights are in the checkpoint
        self.model = build_model(self.hparams.model)

    @staticmethod
    def check_args(a: Mapping[str, Any]) -> None:
        """Checks of this class's own arguments (``a``: name -> value), run by ``__init__`` and, on the config before
        anything is built, by :func:`labkit.core.checks.check_target`. Subclasses declare their own the same way."""
        check_finetune_args(a["freeze"], a["unfreeze_at_epoch"], a["unfreeze_lr_factor"])
        checks.one_of("task.scheduler_interval", a["scheduler_interval"], ("epoch", "step"))
        opt = a["optimizer"] or {}
        checks.positive("task.optimizer.lr", opt.get("lr"), optional=True)
        checks.fraction("task.optimizer.momentum", opt.get("momentum"), optional=True,
                        hint="the notes use 0.99, and above 1 the updates grow without bound")
        checks.non_negative("task.optimizer.weight_decay", opt.get("weight_decay"), optional=True)
        checks.positive("task.optimizer.eps", opt.get("eps"), optional=True)
        for i, beta in enumerate(opt.get("betas") or ()):
            checks.in_range(f"task.optimizer.betas[{i}]", beta, 0.0, 1.0, hi_open=True)

    def forward(self, x):
        return self.model(x)

    def setup(self, stage: str) -> None:
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.model = torch.compile(self.model)
            self._compiled = True

    def on_fit_start(self) -> None:
        total, trainable = count_parameters(self.model), count_parameters(self.model, trainable_only=True)
        log.info("model %s: %s parameters (%s trainable)", type(self.model).__name__, f"{total:,}", f"{trainable:,}")
        if self.logger is not None:
            self.logger.log_metrics({"model/params": total, "model/trainable_params": trainable}, step=0)

    def check_compatible(self, data) -> None:
        """Tell ``data`` the batches this task trains on (``data.sampling``, the one place it is set; called once
        by :func:`labkit.run.lifecycle.build`), then raise :class:`IncompatibleError` when this task and its network
        cannot work on ``data``. Subclasses call ``super().check_compatible(data)`` first."""
        data.sampling = self.sampling

    def configure_callbacks(self):
        """Transfer learning (``freeze``/``unfreeze_at_epoch``/``unfreeze_lr_factor``, see labkit.tasks.finetuning)."""
        return finetuning_callbacks(self.hparams.get("freeze"), self.hparams.get("unfreeze_at_epoch"),
                                    self.hparams.get("unfreeze_lr_factor", 0.1))

    def configure_optimizers(self):
        if not self.hparams.optimizer:
            raise ConfigError("task.optimizer is not set: choose one, e.g. task/optimizer=sgd")
        opt = instantiate(self.hparams.optimizer)
        opt = opt(params=[p for p in self.parameters() if p.requires_grad])
        sched_cfg = self.hparams.scheduler
        if not sched_cfg:
            return opt
        sched_cfg = dict(sched_cfg)
        interval = self.hparams.scheduler_interval
        if sched_cfg.get("_target_", "").endswith("OneCycleLR"):
            if sched_cfg.get("total_steps") is None:  # conf/task/scheduler/onecycle.yaml: null = from the trainer
                sched_cfg["total_steps"] = int(self.trainer.estimated_stepping_batches)
            interval = "step"
        if sched_cfg.get("_target_", "").endswith("CosineAnnealingLR") and sched_cfg.get("T_max") is None:
            sched_cfg["T_max"] = max(1, int(self.trainer.max_epochs or 1))
        sched = instantiate(sched_cfg)(optimizer=opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": interval}}


def probe_output(model: torch.nn.Module, input_shape, name: str) -> torch.Tensor:
    """Run ``model`` on zeros of ``input_shape`` (batch of 2) and turn shape errors into a clear message."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(torch.zeros(2, *input_shape))
    except RuntimeError as e:
        raise IncompatibleError(f"model '{name}' cannot run on input {tuple(input_shape)}: {str(e).splitlines()[0]}") \
            from None
    finally:
        model.train(was)
