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

from labkit.errors import ConfigError, IncompatibleError
from labkit.models._shape import count_parameters
from labkit.models.build import as_dict, build_model
from labkit.tasks.finetuning import check_finetune_args, finetuning_callbacks

log = logging.getLogger(__name__)


class LabTask(pl.LightningModule):
    sampling = "single"
    monitor = ("val/loss", "min")

    def __init__(self, model: Mapping[str, Any], optimizer: Mapping[str, Any] | None = None,
                 scheduler: Mapping[str, Any] | None = None, scheduler_interval: str = "epoch",
                 compile: bool = False, freeze: str | None = None, unfreeze_at_epoch: int | None = None,
                 unfreeze_lr_factor: float = 0.1):
        super().__init__()
        freeze = check_finetune_args(freeze, unfreeze_at_epoch, unfreeze_lr_factor)
        if scheduler_interval not in ("epoch", "step"):
            raise ConfigError(f"task.scheduler_interval={scheduler_interval!r} is invalid: use epoch or step")
        self.save_hyperparameters({"model": as_dict(model), "optimizer": as_dict(optimizer),
                                   "scheduler": as_dict(scheduler), "scheduler_interval": scheduler_interval,
                                   "compile": compile, "freeze": freeze, "unfreeze_at_epoch": unfreeze_at_epoch,
                                   "unfreeze_lr_factor": unfreeze_lr_factor})
        self._check_optimizer(self.hparams.optimizer)
        self.model = build_model(self.hparams.model)
        if self.hparams.model.get("init_from"):
            # the weights are in this task's checkpoints from now on: reloading must not read the source again
            self.hparams.initialized_from = self.hparams.model["init_from"]
            self.hparams.model["init_from"] = None

    @staticmethod
    def _check_optimizer(opt: Mapping[str, Any] | None) -> None:
        if not opt:
            return
        for key in ("lr", "momentum", "weight_decay"):
            v = opt.get(key)
            if v is not None and (not isinstance(v, (int, float)) or v < 0 or (key == "lr" and v == 0)):
                raise ConfigError(f"task.optimizer.{key}={v!r} is invalid: it must be a "
                                  f"{'positive' if key == 'lr' else 'non-negative'} number")

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
        """Raise :class:`IncompatibleError` when this task and its network cannot work on ``data``."""
        if data.sampling != self.sampling and self.sampling != "single":
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
