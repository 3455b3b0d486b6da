"""The composed config (``config/...`` parameters) and the run's final figures (best monitored value, parameters,
epochs, test error) to every logger of the trainer (:class:`RunSummary`)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl

from labkit.core.values import flatten
from labkit.loggers.base import _param

log = logging.getLogger("labkit")


class RunSummary(pl.Callback):
    """Send the composed config and the final figures to every logger of the trainer.

    The config is read from ``<run>/config.yaml`` (written by ``train()`` before the trainer is built) and logged as
    parameters under ``config/``; at the end of fit the best monitored value, the parameter counts and the epochs,
    and after the test the test error, are logged as metrics. Nothing happens without a logger.

    ``config_of``: the saved config of a run folder, None for a folder that holds no run; the run core that attaches
    this callback gives it (:func:`labkit.run.lifecycle.attach`: the run folder's API is a layer above the callbacks).
    Without it no config is sent.
    """

    config_of: Callable[[Path], Any] | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.loggers or not trainer.is_global_zero:
            return
        run_dir = Path(trainer.default_root_dir)
        saved = self.config_of(run_dir) if self.config_of is not None else None
        if saved is None:
            return
        from omegaconf import OmegaConf

        # the settings as they apply to this run (interpolations resolved: a logger may re-parse strings, and a
        # cut "${paths.output_dir}" is no valid interpolation); the resume history is a record, not a setting
        config = OmegaConf.to_container(saved, resolve=True)
        config.pop("resume_history", None)
        params = flatten({"config": config}, "/", _param)
        for lg in trainer.loggers:
            lg.log_hyperparams(params)

    def _log(self, trainer: pl.Trainer, metrics: dict[str, float]) -> None:
        if not trainer.loggers or not trainer.is_global_zero or not metrics:
            return
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=trainer.global_step)
            lg.save()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from labkit.models._shape import count_parameters

        model = getattr(pl_module, "model", pl_module)
        final = {"final/params": float(count_parameters(model)),
                 "final/trainable_params": float(count_parameters(model, trainable_only=True)),
                 "final/epochs": float(trainer.current_epoch)}
        for cb in trainer.checkpoint_callbacks:
            if getattr(cb, "monitor", None) and cb.best_model_score is not None:
                final[f"final/best_{cb.monitor}"] = float(cb.best_model_score)
        self._log(trainer, final)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        m = {f"final/{k}": float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        if "final/test/acc" in m:
            m["final/test/error"] = 1.0 - m["final/test/acc"]  # a fraction, like the accuracy
        self._log(trainer, m)
