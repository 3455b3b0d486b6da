"""The run stopped from outside: a scheduler's SIGTERM/SIGUSR1 (:class:`Preempted`, and :class:`SignalsAsSigterm`
making SIGUSR1 stop a run the way SIGTERM does) or Ctrl-C (:class:`Interrupted`)."""
from __future__ import annotations

import logging
import os
import signal
import threading

import pytorch_lightning as pl

from labkit.core.errors import RunStopped

log = logging.getLogger("labkit")


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
