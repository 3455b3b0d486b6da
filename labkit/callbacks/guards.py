"""Stop cleanly on a NaN/inf loss (:class:`FiniteLossGuard`), naming the step and batch, without a host sync per step,
and before a poisoned checkpoint can be written."""
from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch

from labkit.core.errors import LabkitError

log = logging.getLogger("labkit")


class NonFiniteLossError(LabkitError, FloatingPointError):
    """The training loss became NaN or infinite."""


class FiniteLossGuard(pl.Callback):
    """Raise :class:`NonFiniteLossError` when the training loss is not finite.

    The check is recorded on the device every step and read back every ``check_every`` steps (and at
    the end of each epoch, before validation and checkpointing), so it costs no per-step host sync.
    """

    def __init__(self, check_every: int = 20):
        self.check_every = max(1, int(check_every))
        self._bad: torch.Tensor | None = None  # global step of the first non-finite loss, -1 = none (on the device)
        self._where: dict[int, tuple[int, int]] = {}  # global step -> (epoch, batch) since the last read-back

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        loss = loss.detach()
        if self._bad is None or self._bad.device != loss.device:
            self._bad = torch.full((), -1, dtype=torch.long, device=loss.device)
        step = trainer.global_step
        self._where[step] = (trainer.current_epoch, batch_idx)
        first = (~torch.isfinite(loss).all()) & (self._bad < 0)
        self._bad = torch.where(first, step, self._bad)  # a Python scalar: no host-to-device copy
        if (batch_idx + 1) % self.check_every == 0:
            self._check(pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._check(pl_module)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._check(pl_module)

    @staticmethod
    def _kept(pl_module) -> str:
        """What a run stopped by the guard keeps: its last good checkpoint, only when one was written."""
        cb = pl_module.trainer.checkpoint_callback
        last = (cb.last_model_path or cb.best_model_path) if cb is not None else ""
        if last and Path(last).is_file():
            return f"the last good checkpoint is kept ({Path(last).parent.name}/{Path(last).name})"
        return "no checkpoint was written before it (it stopped in its first epoch), so nothing is kept to resume from"

    def _check(self, pl_module) -> None:
        if self._bad is None:
            return
        step = int(self._bad)  # the only host sync, every check_every steps
        if step < 0:
            self._where.clear()
            return
        epoch, batch = self._where.get(step, (-1, -1))
        lr = None
        try:
            lr = pl_module.trainer.optimizers[0].param_groups[0]["lr"]
        except Exception:  # no optimizer (a manual loop, a test double): the message goes without the lr
            pass
        raise NonFiniteLossError(
            f"the training loss became NaN/inf at global step {step} (epoch {epoch}, batch {batch}). "
            f"Training stopped; {self._kept(pl_module)}. "
            f"Try a lower learning rate{f' than {lr:g}' if lr else ''} (task.optimizer.lr=...), gradient clipping "
            f"(trainer.gradient_clip_val=1.0) or check the input data for NaNs.")
