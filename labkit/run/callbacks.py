"""Lightning callbacks and plugins that make runs reproducible and fault tolerant.

- :class:`EpochSeed` reseeds the random generators at every epoch start from (seed, epoch), so a run
  resumed from an end-of-epoch checkpoint continues bit for bit like the uninterrupted one.
- :class:`FiniteLossGuard` stops training cleanly on a NaN/inf loss, naming the step and batch, without
  a host sync per step, and before a poisoned checkpoint can be written.
- :class:`RunClock` keeps a run's wall time over all its sessions: saved in every checkpoint, restored by a resume.
- :class:`SignalsAsSigterm` makes SIGUSR1 (SLURM's ``--signal=USR1@<seconds>`` before a time limit) stop a run
  the way SIGTERM does (Lightning stops at the next step); the run core records it as preempted.
- :class:`AtomicCheckpointIO` writes checkpoints to a temporary file and renames it, so a kill during a
  save never leaves a truncated ``.ckpt`` behind; it deletes replaced checkpoints except those it is told to keep.
"""
from __future__ import annotations

import datetime
import io
import logging
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from labkit.adapters import lightning as lightning_internals
from labkit.core.errors import LabkitError, RunStopped
from labkit.core.files import atomic_write_bytes
from labkit.data.base import LabDataModule

log = logging.getLogger("labkit")


class NonFiniteLossError(LabkitError, FloatingPointError):
    """The training loss became NaN or infinite."""


class Preempted(RunStopped):
    """The scheduler stopped the run (SIGTERM, or SIGUSR1 before a time limit): its last end-of-epoch checkpoint
    stays, and a resume (or the requeued job) continues from it exactly as if it had not stopped."""

    status = "preempted"


class Interrupted(RunStopped):
    """The run was stopped by Ctrl-C or another exit request while training; its checkpoints stay."""

    status = "interrupted"


class SignalsAsSigterm(pl.Callback):
    """While fitting, SIGUSR1 is treated as SIGTERM: Lightning then stops at the next training step (all DDP ranks
    together); the last checkpoint's ``save_on_stop`` (:class:`RunCheckpoint`) writes that step. Left alone when
    something else already handles SIGUSR1 (Lightning's own SLURM auto-requeue, a launcher)."""

    def __init__(self):
        self._previous = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        usr1 = getattr(signal, "SIGUSR1", None)
        if usr1 is None or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(usr1) in (signal.SIG_DFL, None):
            self._previous = signal.signal(usr1, lambda signum, frame: os.kill(os.getpid(), signal.SIGTERM))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGUSR1, self._previous)
            self._previous = None


class EpochSeed(pl.Callback):
    """Seed python, numpy and torch at the start of each training epoch from ``(seed, epoch)``."""

    def __init__(self, seed: int | None = 0):
        self.seed = 0 if seed is None else int(seed)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        s = (self.seed * 1_000_003 + trainer.current_epoch * 7919 + trainer.global_rank) % (2**32)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)

    # a mid-epoch checkpoint: the generators where the run stopped, and the batches of the epoch it trained on
    def state_dict(self) -> dict[str, Any]:
        version, mt, gauss = random.getstate()
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        return {"python": [version, list(mt), gauss], "torch": torch.get_rng_state(),
                "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return  # a checkpoint written before labkit saved the generators
        version, mt, gauss = state_dict["python"]
        random.setstate((version, tuple(mt), gauss))
        kind, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state_dict["torch"])

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        """Resuming a checkpoint written inside an epoch: the data module's next training loader starts that epoch
        at the first batch not trained on yet (:func:`mid_epoch_position`)."""
        position = mid_epoch_position(checkpoint)
        data = trainer.datamodule
        if position is not None and data is not None and trainer.state.fn == "fit":
            if isinstance(data, LabDataModule):
                data.resume_training_at(*position)
            log.info("resuming inside epoch %d, after its batch %d", position[0], position[1])


def mid_epoch_position(checkpoint: dict) -> tuple[int, int] | None:
    """(epoch, training batches of it done) of a checkpoint written inside an epoch (every N steps, or where a SIGTERM
    stopped the run); None for one written at the end of an epoch. Read from Lightning's loop progress: the epoch
    started but not processed, and the batches whose training step ran."""
    try:
        fit = checkpoint["loops"]["fit_loop"]
        epochs = fit["epoch_progress"]["total"]
        batches = int(fit["epoch_loop.batch_progress"]["current"]["processed"])
    except (KeyError, TypeError):
        return None
    if epochs["processed"] != epochs["started"] - 1 or batches <= 0:
        return None
    return int(epochs["processed"]), batches


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
        except Exception:
            pass
        raise NonFiniteLossError(
            f"the training loss became NaN/inf at global step {step} (epoch {epoch}, batch {batch}). "
            f"Training stopped; {self._kept(pl_module)}. "
            f"Try a lower learning rate{f' than {lr:g}' if lr else ''} (task.optimizer.lr=...), gradient clipping "
            f"(trainer.gradient_clip_val=1.0) or check the input data for NaNs.")


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose state survives a moved or copied run directory.

    Lightning keeps absolute paths in a checkpoint's callback state; when the directory has moved, stock
    ``ModelCheckpoint`` forgets the best score and keeps the old ``best_model_path``, so a resumed run would call
    its next epoch the best and test a file outside itself. Here every path under the checkpoint's old folder is
    mapped onto the current one first. (Checkpoints it replaces are deleted through :class:`AtomicCheckpointIO`, which
    keeps those it is told to keep.)

    ``every_n_train_steps`` / ``every_minutes`` (last.ckpt, no monitor): also written inside epochs; ``save_on_stop``:
    written at the step where a scheduler's SIGTERM/SIGUSR1 stops the run."""

    def __init__(self, *args: Any, every_n_train_steps: int | None = None, every_minutes: float | None = None,
                 save_on_stop: bool = False, **kwargs: Any):
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


class RunClock(pl.Callback):
    """The wall time of a run over all its sessions. Started when a session starts; every checkpoint stores the total
    so far, and a resume from that checkpoint starts counting from it (time after the last checkpoint of a killed
    session is lost, like its training)."""

    def __init__(self):
        self.started = time.time()
        self.before = 0.0  # the sessions before this one, as far as the checkpoint this one resumed knows
        self._fitted = False
        self.epoch: int | None = None  # the epoch being trained (where a stop happened)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch = trainer.current_epoch

    def session(self) -> float:
        return time.time() - self.started

    def totals(self, recorded_before: float = 0.0) -> tuple[float, float]:
        """(this session, all sessions): the earlier ones are what the resumed checkpoint counted or, when larger,
        ``recorded_before`` (a finished run's metrics.json, which also counts its test after the last checkpoint)."""
        session = self.session()
        return session, max(self.before, recorded_before) + session

    def state_dict(self) -> dict[str, Any]:
        return {"wall_time_s": self.before + self.session()}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fitted = True

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._fitted:
            return  # trainer.test(ckpt_path=best) restores callbacks too: the resume's starting point stays
        self.before = float(state_dict.get("wall_time_s", 0.0))


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
