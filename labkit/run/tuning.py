"""The learning-rate finder: ``python train.py tune_lr=true ...`` (Lightning 2.x ``Tuner.lr_find``).

Before training, the learning rate is swept exponentially from ``tune_lr_min`` to ``tune_lr_max`` over
``tune_lr_steps`` training batches (weights and trainer state are restored afterwards), the loss-vs-lr curve is
saved as ``<run>/lr_finder.png`` with the suggestion marked (the steepest descent of the loss), and the suggestion
is printed. With ``tune_lr_apply: true`` (default) the run trains with it, and ``config.yaml`` records it
(``task.optimizer.lr``); with ``false`` it is only suggested. ``<run>/lr_finder.json`` keeps the figures.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from labkit.core import files
from labkit.core.errors import ConfigError

log = logging.getLogger("labkit")


def _settings(cfg: DictConfig) -> dict[str, Any]:
    s = {"min_lr": cfg.get("tune_lr_min", 1e-6), "max_lr": cfg.get("tune_lr_max", 1.0),
         "num_training": cfg.get("tune_lr_steps", 100)}
    for key, v in (("tune_lr_min", s["min_lr"]), ("tune_lr_max", s["max_lr"])):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ConfigError(f"{key}={v!r} is invalid: it must be a positive number")
    if s["min_lr"] >= s["max_lr"]:
        raise ConfigError(f"tune_lr_min={s['min_lr']} must be smaller than tune_lr_max={s['max_lr']}")
    n = s["num_training"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ConfigError(f"tune_lr_steps={n!r} is invalid: it must be an integer >= 2 (training batches swept)")
    return s


def maybe_tune_lr(cfg: DictConfig, trainer, task, data, out_dir) -> float | None:
    """Run the finder when ``cfg.tune_lr`` is true; returns the learning rate the task now trains with when the
    suggestion was applied (``tune_lr_apply``), else None."""
    if not cfg.get("tune_lr", False):
        return None
    if cfg.get("resume"):
        log.info("tune_lr: skipped, this run is resumed with its own learning rate")
        return None
    if trainer.num_devices > 1 or trainer.num_nodes > 1:
        raise ConfigError("tune_lr=true runs on one device: set trainer.devices=1 for the search, then train on "
                          "several devices with the suggested task.optimizer.lr")
    opt = task.hparams.get("optimizer") or {}
    if "lr" not in opt:
        raise ConfigError("tune_lr=true needs a learning rate to tune, but task.optimizer has no 'lr'")
    from pytorch_lightning.tuner import Tuner

    settings = _settings(cfg)
    before = float(opt["lr"])
    max_epochs = trainer.fit_loop.max_epochs
    trainer.fit_loop.max_epochs = -1  # the sweep is bounded by its steps, not by the run's epochs
    try:
        finder = Tuner(trainer).lr_find(task, datamodule=data, update_attr=False, **settings)
    finally:
        trainer.fit_loop.max_epochs = max_epochs
    out_dir = Path(out_dir)
    suggestion = finder.suggestion() if finder is not None else None
    record = {"suggestion": suggestion, "configured_lr": before, "applied": False, **settings,
              "lrs": list(map(float, finder.results.get("lr", []))) if finder else [],
              "losses": list(map(float, finder.results.get("loss", []))) if finder else []}
    if finder is not None and record["lrs"]:
        fig = finder.plot(suggest=suggestion is not None)
        ax = fig.axes[0]
        ax.axvline(before, color="grey", linestyle="--", linewidth=1, label=f"configured lr {before:g}")
        ax.set_title("learning-rate finder" + (f": suggestion {suggestion:.3g}" if suggestion else ""))
        ax.legend(fontsize=8)
        files.save_figure(fig, out_dir / "lr_finder.png")
    if suggestion is None:
        log.warning("tune_lr: the finder made no suggestion (the loss did not fall over %d steps): keeping lr=%g; "
                    "see %s", settings["num_training"], before, out_dir / "lr_finder.png")
    elif cfg.get("tune_lr_apply", True):
        task.hparams.optimizer["lr"] = float(suggestion)  # the caller records it in config.yaml
        record["applied"] = True
        log.info("tune_lr: suggested learning rate %.3g (was %g): training with it; curve in %s", suggestion, before,
                 out_dir / "lr_finder.png")
    else:
        log.info("tune_lr: suggested learning rate %.3g (training keeps lr=%g, tune_lr_apply=false); rerun with "
                 "task.optimizer.lr=%.3g to use it; curve in %s", suggestion, before, suggestion,
                 out_dir / "lr_finder.png")
    files.write_json(out_dir / "lr_finder.json", record)
    return float(suggestion) if record["applied"] else None
