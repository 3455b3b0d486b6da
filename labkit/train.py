"""``train(cfg)``: the pure training function behind ``train.py`` (tests call it directly)."""
from __future__ import annotations

import logging
import random
import time
import traceback
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from labkit import runs, tuning
from labkit.callbacks import AtomicCheckpointIO
from labkit.config import validate
from labkit.errors import LabkitError
from labkit.models._shape import count_parameters

log = logging.getLogger("labkit")


class _QuietTips(logging.Filter):
    """Drop Lightning's advertising tips from the console; keep every real message."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


for _name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_QuietTips())


def _output_dir(cfg: DictConfig) -> Path:
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    probe = out / ".write_test"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"cannot write to the run directory {out} ({e.strerror}): set paths.log_dir "
                              "(or LABKIT_LOG_DIR) to a writable folder") from None
    return out


def build_object(node, **kwargs):
    """``hydra.utils.instantiate`` that re-raises labkit's own errors unwrapped, so the user sees the
    message that says what to change instead of Hydra's nested 'Error in call to target' wrappers."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None:
            if isinstance(cause, LabkitError):
                raise cause from None
            cause = cause.__cause__
        raise


def build(cfg: DictConfig):
    """Build (data module, task) from a validated config, checking they fit together."""
    data = build_object(cfg.data)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    task = build_object(cfg.task, model=model_cfg)
    data.sampling = task.sampling
    task.check_compatible(data)
    return data, task


def _callbacks(cfg: DictConfig, task, has_logger: bool) -> list[pl.Callback]:
    cbs = []
    bar = cfg.trainer.get("enable_progress_bar", True) is not False
    for key, node in (cfg.get("callbacks") or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        if not bar and "ProgressBar" in str(node._target_):
            continue  # trainer.enable_progress_bar=false switches the bar callback off too
        if not has_logger and "LearningRateMonitor" in str(node._target_):
            continue  # logger=none: nothing to monitor into
        if key == "model_checkpoint":
            with open_dict(node):
                monitor, mode = task.monitor
                node.monitor = node.monitor or monitor
                node.mode = node.mode or mode
        cbs.append(instantiate(node))
    return cbs


def _loggers(cfg: DictConfig) -> list:
    return [build_object(n) for n in (cfg.get("logger") or {}).values()
            if isinstance(n, DictConfig) and "_target_" in n]


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train, test the best checkpoint and write config.yaml, metrics.json and checkpoints to the run dir.

    Returns the metrics dict that is also written to ``<run dir>/metrics.json``.
    """
    start = time.time()
    resume_ckpt = None
    if cfg.get("resume"):
        run_dir, resume_ckpt = runs.resume_target(cfg.resume, cfg.paths.log_dir)
        saved = runs.load_config(run_dir)
        with open_dict(saved):
            saved.paths.output_dir = str(run_dir)
            saved.resume = str(run_dir)
        cfg = saved
        if resume_ckpt is None:
            log.warning("%s has no checkpoint yet: training it from the start", run_dir)
        else:
            log.info("resuming %s from %s", run_dir, resume_ckpt)
    if cfg.get("seed") is None:
        with open_dict(cfg):
            cfg.seed = random.randint(0, 2**31 - 1)
    validate(cfg)
    pl.seed_everything(cfg.seed, workers=True)  # before building: the network's initial weights depend on it
    data, task = build(cfg)
    out = _output_dir(cfg)
    runs.save_config(cfg, out)

    loggers = _loggers(cfg)
    trainer: pl.Trainer = build_object(cfg.trainer, callbacks=_callbacks(cfg, task, bool(loggers)),
                                       logger=loggers or False, plugins=[AtomicCheckpointIO()])
    tuning.maybe_tune_lr(cfg, trainer, task, data, out)  # tune_lr=true: Lightning's lr finder (labkit/tuning.py)
    trainer.fit(task, datamodule=data, ckpt_path=str(resume_ckpt) if resume_ckpt else None)

    ckpt_cb = next((c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)), trainer.checkpoint_callback)
    best = getattr(ckpt_cb, "best_model_path", "") if ckpt_cb else ""
    metrics: dict[str, Any] = {
        "status": "ok",
        "seed": cfg.seed,
        "params": count_parameters(task.model),
        "trainable_params": count_parameters(task.model, trainable_only=True),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "best_checkpoint": best or None,
        "last_checkpoint": str(out / runs.CKPT_DIR / "last.ckpt") if (out / runs.CKPT_DIR / "last.ckpt").exists()
        else None,
        "overrides": list(cfg.get("overrides") or _hydra_overrides()),
    }
    if ckpt_cb is not None and ckpt_cb.best_model_score is not None:
        metrics[f"best_{ckpt_cb.monitor}"] = float(ckpt_cb.best_model_score)
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))})
    if cfg.get("test", True):
        use_best = bool(best) and not trainer.fast_dev_run
        results = trainer.test(task, datamodule=data, ckpt_path=best if use_best else None)
        for k, v in (results[0] if results else {}).items():
            metrics[k] = float(v)
        if "test/acc" in metrics:
            metrics["test/error"] = 100.0 * (1.0 - metrics["test/acc"])
    metrics["wall_time_s"] = time.time() - start
    runs.write_json(out / runs.METRICS_FILE, metrics)
    log.info("run directory: %s", out)
    return metrics


def _hydra_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:
        return []


def record_failure(cfg: DictConfig, exc: BaseException) -> None:
    """Write ``metrics.json`` with status 'failed' and the error's last line (used by sweeps)."""
    try:
        out = Path(cfg.paths.output_dir)
        last = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        runs.write_json(out / runs.METRICS_FILE, {"status": "failed", "error": f"{type(exc).__name__}: {last}",
                                                  "overrides": _hydra_overrides(),
                                                  "traceback": traceback.format_exc()})
    except Exception:  # the original error matters more
        log.exception("could not record the failure")
