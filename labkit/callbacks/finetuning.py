"""Transfer learning as in note 004: freeze the pretrained layers, train the new head, then optionally
unfreeze everything and fine-tune the whole network at a lower learning rate.

``task.freeze=backbone`` trains only the head (:func:`labkit.models.heads.find_head`); ``task.unfreeze_at_epoch=N``
makes the whole network trainable at the start of epoch N (0-based, so after N epochs of head-only
training) and multiplies every learning rate by ``task.unfreeze_lr_factor`` (null: never unfreeze).
Frozen BatchNorm layers stay in evaluation mode (their running statistics are frozen too) until the
unfreeze. The callback (:class:`UnfreezeBackbone`) is returned by :meth:`LabTask.configure_callbacks`.
"""
from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BaseFinetuning
from torch import nn

from labkit.adapters.torch import set_last_lr
from labkit.models.heads import HeadNotFoundError, find_head, head_parameter_names, unwrap  # noqa: F401

# the rule of the three transfer-learning arguments lives with the tasks' other rules (light: the pre-flight runs it)
from labkit.schemas.tasks import check_finetune_args

log = logging.getLogger("labkit")

# optimizer param-group keys that are learning rates (scaled at the unfreeze); OneCycleLR keeps the last three
LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")
# every BatchNorm layer of torch.nn (the subclasses of its private base torch.nn.modules.batchnorm._BatchNorm)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LazyBatchNorm1d, nn.LazyBatchNorm2d,
               nn.LazyBatchNorm3d)


def _count(params) -> int:
    return sum(p.numel() for p in params)


class UnfreezeBackbone(BaseFinetuning):
    """Freeze everything but the head before training; unfreeze all at ``unfreeze_at_epoch`` with LR x factor.

    Learning-rate schedulers keep working after the unfreeze: the new parameter group copies the
    head group's settings and the schedulers' base learning rates are scaled and extended.

    (Called ``BackboneFinetuning`` before labkit had a callbacks package, a name that shadowed Lightning's own class:
    that name still finds this class, :data:`labkit._compat.RENAMED`, and checkpoints keep its state under it.)
    """

    @property
    def state_key(self) -> str:
        return "BackboneFinetuning"  # the key of this callback's state in the checkpoints written before the rename

    def __init__(self, unfreeze_at_epoch: int | None = None, unfreeze_lr_factor: float = 0.1, train_bn: bool = False):
        super().__init__()
        check_finetune_args("backbone", unfreeze_at_epoch, unfreeze_lr_factor)
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.unfreeze_lr_factor = float(unfreeze_lr_factor)
        self.train_bn = train_bn
        self.head = ""
        self._frozen_bn: list[nn.Module] = []
        self._unfrozen = False

    @staticmethod
    def _net(pl_module: pl.LightningModule) -> nn.Module:
        return unwrap(getattr(pl_module, "model", pl_module))

    def _backbone_params(self, net: nn.Module) -> list[torch.nn.Parameter]:
        prefix = self.head + "."
        return [p for n, p in net.named_parameters() if not n.startswith(prefix)]

    # ----- BaseFinetuning hooks -------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":  # not again for trainer.test / validate / predict
            super().setup(trainer, pl_module, stage)

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        net = self._net(pl_module)
        try:
            self.head, head = find_head(net)
        except HeadNotFoundError as e:
            raise HeadNotFoundError(f"task.freeze=backbone: {e}; or set task.freeze=null") from None
        head_ids = {id(p) for p in head.parameters()}
        for p in net.parameters():
            p.requires_grad = id(p) in head_ids
        head_modules = {id(m) for m in head.modules()}
        self._frozen_bn = [] if self.train_bn else [
            m for m in net.modules() if isinstance(m, BATCH_NORMS) and id(m) not in head_modules]
        self._unfrozen = False
        total, trainable = _count(net.parameters()), _count(head.parameters())
        when = (f"until epoch {self.unfreeze_at_epoch}" if self.unfreeze_at_epoch is not None
                else "for the whole run (task.unfreeze_at_epoch=null)")
        log.info("task.freeze=backbone: training only the head '%s' %s: %s of %s parameters trainable",
                 self.head, when, f"{trainable:,}", f"{total:,}")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if not self._unfrozen:
            for m in self._frozen_bn:
                if m.training:
                    m.eval()

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        if self._unfrozen or self.unfreeze_at_epoch is None or epoch < self.unfreeze_at_epoch:
            return
        net = self._net(pl_module)
        backbone = self._backbone_params(net)
        for p in backbone:
            p.requires_grad = True
        for m in self._frozen_bn:
            m.train(net.training)
        self._unfrozen = True
        in_opt = {id(p) for g in optimizer.param_groups for p in g["params"]}
        missing = [p for p in backbone if id(p) not in in_opt]
        factor = self.unfreeze_lr_factor
        if missing or epoch == self.unfreeze_at_epoch:
            old_lr = optimizer.param_groups[0]["lr"]
            for g in optimizer.param_groups:
                for k in LR_KEYS:
                    if isinstance(g.get(k), (int, float)):
                        g[k] = g[k] * factor
            if missing:
                group = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
                optimizer.add_param_group({**group, "params": missing})
            self._fix_schedulers(pl_module, optimizer)
            lr_note = f"learning rate x{factor:g}: {old_lr:g} -> {optimizer.param_groups[0]['lr']:g}"
        else:  # resumed after the unfreeze: the optimizer's groups and learning rates were restored
            lr_note = "learning rates as restored from the checkpoint"
        trainable = _count(p for p in net.parameters() if p.requires_grad)
        log.info("epoch %d: unfreezing the whole network: %s of %s parameters trainable, %s", epoch,
                 f"{trainable:,}", f"{_count(net.parameters()):,}", lr_note)
        if pl_module.logger is not None:
            pl_module.logger.log_metrics({"model/trainable_params": trainable}, step=pl_module.trainer.global_step)

    @staticmethod
    def _fix_schedulers(pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer) -> None:
        groups = optimizer.param_groups
        for cfg in getattr(pl_module.trainer, "lr_scheduler_configs", []) or []:
            sched = cfg.scheduler
            if getattr(sched, "optimizer", None) is not optimizer:
                continue
            if hasattr(sched, "base_lrs"):
                sched.base_lrs = [g.get("initial_lr", g["lr"]) for g in groups]
            set_last_lr(sched, [g["lr"] for g in groups])
            min_lrs = getattr(sched, "min_lrs", None)  # ReduceLROnPlateau: one per group
            if isinstance(min_lrs, list) and min_lrs and len(min_lrs) < len(groups):
                sched.min_lrs = min_lrs + [min_lrs[0]] * (len(groups) - len(min_lrs))


def finetuning_callbacks(freeze: str | None, unfreeze_at_epoch: int | None,
                         unfreeze_lr_factor: float) -> list[pl.Callback]:
    """The callbacks implementing the task's ``freeze`` settings (empty when nothing is frozen)."""
    freeze = check_finetune_args(freeze, unfreeze_at_epoch, unfreeze_lr_factor)
    if freeze is None:
        return []
    return [UnfreezeBackbone(unfreeze_at_epoch, unfreeze_lr_factor)]


def __getattr__(name: str):
    import labkit._compat

    return labkit._compat.moved_attribute(__name__, name)  # BackboneFinetuning (saved configs and checkpoints name it)
