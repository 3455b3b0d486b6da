"""Checkpoints that survive moved run folders and kills: :class:`RunCheckpoint` (Lightning's ``ModelCheckpoint``,
also inside epochs and where a scheduler stops the run) and :class:`AtomicCheckpointIO` (the trainer's checkpoint
plugin: a kill during a save never leaves a truncated ``.ckpt``; it deletes replaced checkpoints except those it is
told to keep)."""
from __future__ import annotations

import datetime
import io
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from labkit.adapters import lightning as lightning_internals
from labkit.core.files import atomic_write_bytes
from labkit.schemas import callbacks as schema
from labkit.schemas.base import defaults_of

log = logging.getLogger("labkit")


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose state survives a moved or copied run directory.

    Lightning keeps absolute paths in a checkpoint's callback state; when the directory has moved, stock
    ``ModelCheckpoint`` forgets the best score and keeps the old ``best_model_path``, so a resumed run would call
    its next epoch the best and test a file outside itself. Here every path under the checkpoint's old folder is
    mapped onto the current one first. (Checkpoints it replaces are deleted through :class:`AtomicCheckpointIO`, which
    keeps those it is told to keep.)

    ``every_n_train_steps`` / ``every_minutes`` (last.ckpt, no monitor): also written inside epochs; ``save_on_stop``:
    written at the step where a scheduler's SIGTERM/SIGUSR1 stops the run."""

    check_args = staticmethod(schema.RunCheckpoint.check)  # the schema's rules: save_top_k, mode, the intervals

    def __init__(self, *args: Any, every_n_train_steps: int | None = None, every_minutes: float | None = None,
                 save_on_stop: bool = False, **kwargs: Any):
        RunCheckpoint.check_args({**defaults_of(schema.RunCheckpoint), **kwargs,
                                  "every_n_train_steps": every_n_train_steps, "every_minutes": every_minutes})
        if kwargs.get("monitor") is not None:  # a best-by-metric checkpoint: Lightning's own step/time triggers
            if every_minutes:
                kwargs["train_time_interval"] = datetime.timedelta(minutes=float(every_minutes))
            super().__init__(*args, every_n_train_steps=every_n_train_steps, **kwargs)
            self.mid_epoch_steps, self.every_minutes = None, None
        else:  # last.ckpt: also written inside epochs, and still after every epoch
            super().__init__(*args, **kwargs)
            self.mid_epoch_steps = int(every_n_train_steps) if every_n_train_steps else None
            self.every_minutes = float(every_minutes) if every_minutes else None
        self.save_on_stop = bool(save_on_stop)
        self._last_mid_save = time.monotonic()

    def _save_here(self, trainer) -> None:
        """Write this callback's file (``last.ckpt``) now, at the current step (atomically: AtomicCheckpointIO)."""
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        if lightning_internals.save_unmonitored_checkpoint_now(self, trainer):
            self._last_mid_save = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        due = bool(self.mid_epoch_steps) and trainer.global_step % self.mid_epoch_steps == 0
        if self.every_minutes:
            elapsed = torch.tensor(time.monotonic() - self._last_mid_save >= 60 * self.every_minutes)
            due |= bool(trainer.strategy.broadcast(elapsed))  # rank 0's clock decides for every rank
        if due:
            self._save_here(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """A scheduler's SIGTERM/SIGUSR1 (Lightning stops at the end of the step): ``save_on_stop`` writes the
        checkpoint of that step, so that the requeued job or a resume continues from it."""
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        if self.save_on_stop and isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            self._save_here(trainer)
            log.info("saved %s at step %d, where the run stopped", Path(self.best_model_path or "").name,
                     trainer.global_step)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old, new = state_dict.get("dirpath"), self.dirpath
        if old and new and old != new:
            def move(path):
                if isinstance(path, str) and path.startswith(old.rstrip("/") + "/"):
                    return os.path.join(new, path[len(old.rstrip("/")) + 1:])
                return path

            state_dict = dict(state_dict, dirpath=new)
            for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                if key in state_dict:
                    state_dict[key] = move(state_dict[key])
            if "best_k_models" in state_dict:
                state_dict["best_k_models"] = {move(k): v for k, v in state_dict["best_k_models"].items()}
        super().load_state_dict(state_dict)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that serializes in memory, then writes a temporary file and renames it
    (:func:`labkit.core.files.atomic_write_bytes`): the checkpoint gets the permissions the umask gives, and the first
    save into a folder removes the temporaries (``.<name>.<pid>-<host>-<random>.labkit-tmp``) of killed saves.

    ``keep``: checkpoint files that are never deleted while training, although a better checkpoint replaces them (a
    resumed run keeps the best checkpoint that the finished run's metrics.json names, until the resume has finished
    and rewritten metrics.json: a resume killed half-way leaves a record whose checkpoint still exists). Every
    checkpoint Lightning deletes (``ModelCheckpoint`` replacing one) goes through :meth:`remove_checkpoint`."""

    def __init__(self) -> None:
        super().__init__()
        self.keep: set[str] = set()

    def remove_checkpoint(self, path) -> None:
        if os.path.realpath(path) in self.keep:
            log.info("keeping %s (the finished run's best checkpoint) until this run has finished", path)
            return
        super().remove_checkpoint(path)

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())
