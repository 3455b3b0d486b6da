"""The learning-rate finder: ``python train.py tune_lr=true ...`` (Lightning 2.x ``Tuner.lr_find``).

Before training, the learning rate is swept exponentially from ``tune_lr_min`` to ``tune_lr_max`` over
``tune_lr_steps`` training batches (weights and trainer state are restored afterwards), the loss-vs-lr curve is
saved as ``<run>/lr_finder.png`` with the suggestion marked (the steepest descent of the loss), and the suggestion
is printed. The curve is smoothed with a centred moving mean (:func:`centred`): unlike Lightning's running average
it does not lag behind the losses, so the smoothed line lies on the raw one and the steepest descent is found where
the loss really falls fastest (before its minimum, where it then diverges). With ``tune_lr_apply: true``
(default) the run trains with it, and ``config.yaml`` records it (``task.optimizer.lr``); with ``false`` it is only
suggested. ``<run>/lr_finder.json`` keeps the figures.
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


BETA = 0.98  # Lightning's lr finder: loss smoothed with momentum 0.98


def unbias(lightning_losses: list[float], beta: float = BETA) -> dict[str, Any]:
    """The raw losses and a correctly bias-corrected smoothed curve, from the curve Lightning's finder returns.

    Lightning keeps ``avg_k = beta * avg_(k-1) + (1 - beta) * loss_k`` but divides by ``1 - beta ** (k + 2)`` (its
    global step is already ``k + 1`` when it records point ``k``), so its first point is about half the true loss
    (0.02 / 0.0396) and its early curve rises before it falls. Inverting its recurrence gives each raw loss back;
    the smoothed curve is then ``avg_k / (1 - beta ** (k + 1))``, whose first point is the first loss itself. A curve
    with gaps (NaN: steps without a loss) is returned as it is (``corrected: False``)."""
    import math

    if not lightning_losses or not all(math.isfinite(v) for v in lightning_losses):
        return {"raw": list(lightning_losses), "smoothed": list(lightning_losses), "corrected": False}
    avg_prev, raw, smoothed = 0.0, [], []
    for k, s in enumerate(lightning_losses):
        avg = s * (1 - beta ** (k + 2))
        raw.append((avg - beta * avg_prev) / (1 - beta))
        smoothed.append(avg / (1 - beta ** (k + 1)))
        avg_prev = avg
    return {"raw": raw, "smoothed": smoothed, "corrected": True}


def half_window(n: int) -> int:
    """Half the width of the centred window for a curve of ``n`` points: 5 % of them, at least 2."""
    return max(2, n // 20)


def centred(raw: list[float], half: int | None = None) -> list[float]:
    """The centred moving mean of ``raw``: point ``k`` is the mean of points ``k - h .. k + h`` (``h``:
    :func:`half_window`), the window narrowed symmetrically near the ends, so the smoothed curve never lags the raw
    one (a running average trails it by about ``1 / (1 - beta)`` points, 50 for Lightning's 0.98). Gaps (NaN) are
    left out of the means."""
    import numpy as np

    x = np.asarray(raw, dtype=float)
    h = half_window(len(x)) if half is None else half
    out = []
    for k in range(len(x)):
        w = min(h, k, len(x) - 1 - k)
        part = x[k - w:k + w + 1]
        part = part[np.isfinite(part)]
        out.append(float(part.mean()) if part.size else float("nan"))
    return out


def suggest(lrs: list[float], smoothed: list[float], skip_begin: int | None = None, skip_end: int | None = None
            ) -> float | None:
    """The learning rate where the smoothed loss falls fastest per decade of learning rate, searched before the
    smoothed loss's minimum (after it the loss diverges) and away from the ends (``skip_begin``/``skip_end`` points,
    by default the centred window's half width, where the window is narrow and the curve noisier). The same losses
    give the same suggestion; a rerun's noise moves it by about the window's width at most."""
    import numpy as np

    y = np.asarray(smoothed, dtype=float)
    x = np.log10(np.asarray(lrs, dtype=float))
    h = half_window(len(y))
    begin = h if skip_begin is None else skip_begin
    end = len(y) - (h if skip_end is None else skip_end)
    if end - begin < 3 or not np.isfinite(y[begin:end]).all():
        return None
    lowest = begin + int(np.argmin(y[begin:end]))
    if lowest - begin < 2:
        return None  # the loss does not fall
    slope = np.gradient(y[begin:lowest + 1], x[begin:lowest + 1])
    k = int(np.argmin(slope))
    if slope[k] >= 0:
        return None
    # the centre of the steepest stretch (where the loss falls at least half as fast as at its steepest point),
    # weighted by the fall: one noisy point does not move it as it moves the steepest single point
    lo, hi = k, k
    while lo > 0 and slope[lo - 1] <= slope[k] / 2:
        lo -= 1
    while hi < len(slope) - 1 and slope[hi + 1] <= slope[k] / 2:
        hi += 1
    w = -slope[lo:hi + 1]
    centre = float((x[begin + lo:begin + hi + 1] * w).sum() / w.sum())
    return float(lrs[begin + int(np.abs(x[begin:lowest + 1] - centre).argmin())])  # a learning rate of the sweep


def smooth(lightning_losses: list[float]) -> dict[str, Any]:
    """The raw losses (Lightning's running average undone, :func:`unbias`) and their centred moving mean
    (:func:`centred`), with the legend's words for it; a curve with gaps keeps Lightning's own."""
    curve = unbias(lightning_losses)
    if not curve["corrected"]:
        return {**curve, "label": "smoothed (Lightning's)"}
    h = half_window(len(curve["raw"]))
    return {**curve, "smoothed": centred(curve["raw"], h), "label": f"smoothed (centred mean of {2 * h + 1} points)"}


def plot(lrs: list[float], curve: dict[str, Any], suggestion: float | None, configured: float):
    """Loss against learning rate (log axis): the raw losses, the smoothed curve, the configured lr and the
    suggestion."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(lrs, curve["raw"], color="0.7", linewidth=0.8, label="loss per batch")
    ax.plot(lrs, curve["smoothed"], color="C0", linewidth=1.8,
            label=curve.get("label") or ("smoothed (bias-corrected)" if curve["corrected"] else "smoothed (Lightning's)"))
    ax.axvline(configured, color="grey", linestyle="--", linewidth=1, label=f"configured lr {configured:g}")
    if suggestion is not None:
        i = min(range(len(lrs)), key=lambda j: abs(lrs[j] - suggestion))
        ax.plot([suggestion], [curve["smoothed"][i]], "o", color="C3", markersize=8, label=f"suggestion {suggestion:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title("learning-rate finder" + (f": suggestion {suggestion:.3g}" if suggestion else ""))
    ax.legend(fontsize=8)
    return fig


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
    lrs = list(map(float, finder.results.get("lr", []))) if finder else []
    curve = smooth(list(map(float, finder.results.get("loss", []))) if finder else [])
    suggestion = suggest(lrs, curve["smoothed"]) if curve["corrected"] else (finder.suggestion() if finder else None)
    record = {"suggestion": suggestion, "configured_lr": before, "applied": False, **settings, "lrs": lrs,
              "losses": curve["raw"], "smoothed": curve["smoothed"], "bias_corrected": curve["corrected"],
              "smoothing": curve["label"]}
    if lrs:
        files.save_figure(plot(lrs, curve, suggestion, before), out_dir / "lr_finder.png")
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
