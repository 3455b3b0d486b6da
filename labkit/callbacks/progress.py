"""Training progress for people and for log files (``callbacks.progress_bar``, conf/callbacks/default.yaml).

:func:`progress_bar` is the callback the config names (a function, so that no labkit name is one of Lightning's
classes: it was ``ProgressBar``, which saved configs still name). It asks :func:`labkit.core.console.plain` (the one place that
decides) whether output goes to a terminal or to a file:

- on a terminal, :class:`TerminalProgressBar`: Lightning's tqdm bar, labelled with a sweep job's readable name
  (``3_task=siamese``) instead of Lightning's ``v_num`` (the last four characters of the logger's version:
  ``v_num=mese``), and with log lines (labkit's per-epoch line) printed above the bar instead of glued onto it;
- in a file, a pipe or a scheduler's log (``nohup``, ``screen``, SLURM's ``.out``; or ``LABKIT_PLAIN=1``, or
  ``callbacks.progress_bar.plain=true``), :class:`PlainProgress`: no carriage returns or escape codes, one plain
  log line every ``every_n_steps`` steps and/or ``every_s`` seconds::

      epoch 0 (1 of 15) step 120/422 (28%): loss 0.4127  3187 images/s  24.9 batches/s  ETA 0:00:12 epoch, 0:04:05 run

  and, from :class:`labkit.callbacks.history.History`, one line per epoch with its metrics.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from datetime import timedelta
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ProgressBar as _LightningProgressBar
from pytorch_lightning.callbacks import TQDMProgressBar

from labkit.core import console

log = logging.getLogger("labkit")

_LABEL_MAX = 60


def progress_bar(refresh_rate: int = 10, plain: bool | str | None = None, every_n_steps: int | None = None,
                 every_s: float | None = 30.0, name: str = "") -> _LightningProgressBar:
    """The run's progress callback: :class:`TerminalProgressBar` for a person at a terminal, :class:`PlainProgress`
    lines for a file or a scheduler's log.

    Args:
        refresh_rate: the terminal bar is redrawn every this many batches.
        plain: null decides by the terminal (:func:`labkit.core.console.plain`: ``LABKIT_PLAIN=1/0`` forces it);
            true or false forces plain lines or the bar. The choice holds for the whole process (labkit's own
            bars and W&B's console output follow it).
        every_n_steps: plain mode: a line every this many training batches (null: by time only).
        every_s: plain mode: a line when this many seconds passed since the last one (null: by steps only).
        name: the run's label (a sweep job's number and overrides, ``${labkit_job_name:}``; '' for a single run).
    """
    if console.force_plain(plain):
        return PlainProgress(every_n_steps=every_n_steps, every_s=every_s, name=name)
    return TerminalProgressBar(refresh_rate=refresh_rate, name=name)


def _label(name: str | None) -> str:
    name = (name or "").strip()
    if len(name) > _LABEL_MAX:
        name = name[: _LABEL_MAX - 3] + "..."
    return name


# ----- a person at a terminal ----------------------------------------------------------------------------------
class TerminalProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar without ``v_num`` (a cut-off logger version), with the run's label before ``Epoch N``,
    and with log records written above the bar while it trains (tqdm's ``logging_redirect_tqdm``)."""

    def __init__(self, refresh_rate: int = 10, name: str = "", **kwargs: Any):
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self.label = _label(name)
        self._redirect = None

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        return dict(trainer.progress_bar_metrics)  # Lightning adds v_num: the last 4 characters of a logger version

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        if self.label:
            self.train_progress_bar.set_description(f"{self.label} epoch {trainer.current_epoch}")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        if trainer.is_global_zero and self._redirect is None and _console_handler():
            self._redirect = logging_redirect_tqdm(tqdm_class=Tqdm)
            self._redirect.__enter__()

    def _stop_redirect(self) -> None:
        if self._redirect is not None:
            redirect, self._redirect = self._redirect, None
            redirect.__exit__(None, None, None)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_redirect()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._stop_redirect()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._stop_redirect()


def _console_handler() -> bool:
    """The root logger writes to the console (Hydra's job logging does): its records are then printed above the bar.
    Without one (a notebook, tests), nothing is redirected: tqdm's redirect would add a console handler."""
    return any(isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stdout, sys.stderr)
               for h in logging.getLogger().handlers)


# ----- a file, a pipe, a scheduler's log -------------------------------------------------------------------------
def format_eta(seconds: float | None) -> str:
    """``0:04:05``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    return str(timedelta(seconds=int(round(seconds))))


def progress_line(stage: str, step: int, total: float | None, *, epoch: int | None = None,
                  max_epochs: int | None = None, loss: float | None = None, images_per_s: float | None = None,
                  batches_per_s: float | None = None, eta_s: float | None = None, run_eta_s: float | None = None,
                  name: str = "") -> str:
    """One plain progress line, e.g. ``epoch 0 (1 of 15) step 120/422 (28%): loss 0.4127  3187 images/s
    24.9 batches/s  ETA 0:00:12 epoch, 0:04:05 run``; ``stage`` names validation and test passes."""
    where = stage
    if stage == "train" and epoch is not None:
        where = f"epoch {epoch} ({epoch + 1} of {max_epochs})" if max_epochs and max_epochs > 0 else f"epoch {epoch}"
    if total is not None and math.isfinite(total) and total > 0:
        where += f" step {step}/{int(total)} ({100.0 * step / total:.0f}%)"
    else:
        where += f" step {step}"
    if name:
        where = f"[{name}] {where}"
    parts = []
    if loss is not None and math.isfinite(loss):
        parts.append(f"loss {loss:.4g}")
    if images_per_s:
        parts.append(f"{_rate(images_per_s)} images/s")
    if batches_per_s:
        parts.append(f"{_rate(batches_per_s)} batches/s")
    if eta_s is not None:
        parts.append(f"ETA {format_eta(eta_s)}" + (" epoch" if stage == "train" else ""))
        if run_eta_s is not None:
            parts[-1] += f", {format_eta(run_eta_s)} run"
    return f"{where}: {'  '.join(parts)}" if parts else where


def _rate(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def count_images(batch: Any) -> int:
    """Images in a batch: the first dimension of every ``(N, C, H, W)`` tensor in it (a pair batch holds 2N, a
    triplet batch 3N); 0 when it holds none."""
    tensors: list[torch.Tensor] = []

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            tensors.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    walk(batch)
    return sum(int(t.shape[0]) for t in tensors if t.dim() == 4)


def _loss(metrics: dict, outputs: Any) -> float | None:
    """The training loss shown: the step value the task logs to the progress bar, else the step's output."""
    ranked = sorted((k for k in metrics if "loss" in k and not k.startswith(("val", "test"))),
                    key=lambda k: (not k.endswith("_step"), k != "train/loss", k))
    for key in ranked:
        try:
            return float(metrics[key])
        except (TypeError, ValueError):
            continue
    loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
    if isinstance(loss, torch.Tensor) and loss.numel() == 1:
        return float(loss.detach())
    return None


class _Pass:
    """Counters of one pass (a training epoch, a validation or test pass)."""

    def __init__(self, stage: str, total: float | None):
        self.stage, self.total = stage, total
        self.start = self.last = time.monotonic()
        self.batches = self.images = 0
        self.last_batches = self.last_images = 0


class PlainProgress(_LightningProgressBar):
    """Progress as plain log lines (logger ``labkit``, so also in ``train.log``): one every ``every_n_steps``
    training batches and/or every ``every_s`` seconds, with the epoch, step/total, loss, throughput (images/s and
    batches/s since the last line) and the time left in the epoch and in the run; validation and test passes
    that take longer than ``every_s`` get lines of their own. No carriage return, no escape code."""

    def __init__(self, every_n_steps: int | None = None, every_s: float | None = 30.0, name: str = ""):
        super().__init__()
        self.every_n_steps = every_n_steps if every_n_steps and every_n_steps > 0 else None
        self.every_s = every_s if every_s and every_s > 0 else None
        self.label = _label(name)
        self._enabled = True
        self._pass: _Pass | None = None
        self._train_pass: _Pass | None = None  # the epoch a validation pass interrupts
        self._epoch_s: float | None = None  # the last whole epoch (training and validation), for the run's ETA
        self._epoch_start: float | None = None

    # Lightning's ProgressBar interface
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def print(self, *args: Any, **kwargs: Any) -> None:
        print(*args, **kwargs)

    # ----- counting and writing
    def _due(self, p: _Pass) -> bool:
        steps = p.batches - p.last_batches
        if self.every_n_steps and steps >= self.every_n_steps:
            return True
        return bool(self.every_s) and time.monotonic() - p.last >= self.every_s

    def _batch_done(self, trainer: pl.Trainer, batch: Any, outputs: Any, batch_idx: int, train: bool) -> None:
        p = self._pass
        if p is None or not self._enabled:
            return
        p.batches += 1
        p.images += count_images(batch)
        if train:
            if not self._due(p):
                return
        elif not (self.every_s and time.monotonic() - p.last >= self.every_s):
            return  # evaluation passes: by time only (a pass of 10 batches needs no line)
        now = time.monotonic()
        span = max(now - p.last, 1e-9)
        batches_per_s = (p.batches - p.last_batches) / span
        images_per_s = (p.images - p.last_images) / span
        rate = p.batches / max(now - p.start, 1e-9)  # this pass's average: a steadier ETA
        total = p.total if p.total is not None and math.isfinite(p.total) else None
        eta = max(total - batch_idx - 1, 0) / rate if total and rate > 0 else None
        line = progress_line(p.stage, batch_idx + 1, total, name=self.label, batches_per_s=batches_per_s,
                             images_per_s=images_per_s, eta_s=eta,
                             **(self._train_fields(trainer, outputs, rate, eta) if train else {}))
        log.info("%s", line)
        p.last, p.last_batches, p.last_images = now, p.batches, p.images

    def _train_fields(self, trainer: pl.Trainer, outputs: Any, rate: float, eta: float | None) -> dict:
        fields: dict[str, Any] = {"epoch": trainer.current_epoch, "max_epochs": trainer.max_epochs,
                                  "loss": _loss(trainer.progress_bar_metrics, outputs)}
        run_eta = None
        if eta is not None and trainer.max_epochs and trainer.max_epochs > 0:
            per_epoch = self._epoch_s or (self._pass.total / rate if self._pass.total and rate > 0 else None)
            if per_epoch is not None:
                run_eta = eta + (trainer.max_epochs - trainer.current_epoch - 1) * per_epoch
        if trainer.max_steps and trainer.max_steps > 0 and rate > 0:
            by_steps = (trainer.max_steps - trainer.global_step) / rate
            run_eta = by_steps if run_eta is None else min(run_eta, by_steps)
        fields["run_eta_s"] = run_eta
        return fields

    # ----- training
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        now = time.monotonic()
        if self._epoch_start is not None:
            self._epoch_s = now - self._epoch_start
        self._epoch_start = now
        self._pass = _Pass("train", self.total_train_batches)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._batch_done(trainer, batch, outputs, batch_idx, train=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pass = None  # the epoch's line comes from labkit.callbacks.history.History

    # ----- evaluation passes (the sanity check gets no line)
    def _eval_start(self, trainer: pl.Trainer, stage: str, total: float | None) -> None:
        self._train_pass, self._pass = self._pass, _Pass(stage, total)

    def _eval_end(self) -> None:
        self._pass, self._train_pass = self._train_pass, None  # validation inside an epoch: back to the epoch

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._eval_start(trainer, "validation", self.total_val_batches)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self._batch_done(trainer, batch, outputs, batch_idx, train=False)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._eval_end()

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_start(trainer, "test", _sum(trainer.num_test_batches))

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._batch_done(trainer, batch, outputs, batch_idx, train=False)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_end()

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_start(trainer, "predict", _sum(trainer.num_predict_batches))

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        self._batch_done(trainer, batch, outputs, batch_idx, train=False)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_end()


def _sum(batches) -> float | None:
    if isinstance(batches, (list, tuple)):
        return float(sum(batches)) if batches else None
    return batches


def __getattr__(name: str):
    import labkit._compat

    return labkit._compat.moved_attribute(__name__, name)  # ProgressBar (the name saved configs give progress_bar)
