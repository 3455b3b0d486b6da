"""A run's wall time over all its sessions (:class:`RunClock`): saved in every checkpoint, restored by a resume."""
from __future__ import annotations

import logging
import time
from typing import Any

import pytorch_lightning as pl

log = logging.getLogger("labkit")


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
