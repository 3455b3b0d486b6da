"""Bit-for-bit resumes: :class:`EpochSeed` reseeds the random generators at every epoch start from (seed, epoch),
and a checkpoint written inside an epoch continues at its next batch (:func:`mid_epoch_position`) with the
generators (python, numpy, torch's CPU and, when the run uses them, its GPUs') where they were."""
from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from labkit.data.base import LabDataModule

log = logging.getLogger("labkit")


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
        # the GPUs' generators (dropout, random augmentations on the device) when this process uses CUDA; asking for
        # them otherwise would start CUDA on a GPU machine that trains on its CPU
        cuda = [s.clone() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_initialized() else []
        return {"python": [version, list(mt), gauss], "torch": torch.get_rng_state(),
                "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)], "cuda": cuda}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return  # a checkpoint written before labkit saved the generators
        version, mt, gauss = state_dict["python"]
        random.setstate((version, tuple(mt), gauss))
        kind, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state_dict["torch"])
        cuda = state_dict.get("cuda") or []  # (none in checkpoints of CPU runs and of labkit before it saved them)
        if cuda:
            seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if seen == len(cuda):
                torch.cuda.set_rng_state_all(cuda)
            else:
                log.warning("the checkpoint holds the random generators of %d GPU(s) and this process sees %d: they "
                            "are not restored, so this resume will not repeat the interrupted run's random draws on "
                            "the GPU bit for bit", len(cuda), seen)

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
