"""Anomaly detection from reconstruction error (note 003, section 4.3).

Each image's score is the L2 norm of ``input - reconstruction`` over its normalized pixels. The
out-of-distribution images (``ood=<data config name>``, e.g. ``fashion_mnist``, or ``ood=uniform``)
are normalized with the *run's* data module (its mean and std), as the network saw its own data.

Protocol: a logistic regression on the error (the note's detector) is fitted on the validation split
of both populations (the training split when evaluating ``split=val``), then evaluated on ``split``
of both: the percentage of in-distribution and of OOD images it classifies correctly. AUROC uses the
error itself as the OOD score on the evaluated split. A box plot of both populations is saved.

Scores (``anomaly_score=``, what the detector and the headline AUROC use; the AUROC of every score is reported):

* ``l2`` (default, the notes'): ``||x - x_hat||`` over the normalized pixels;
* ``normalized``: the same norm after dividing each pixel's residual by that pixel's spread (standard deviation) on
  the *in-distribution training split*: an error where the autoencoder is always accurate (the background around a
  digit) counts more than one where it always struggles (the strokes). Only in-distribution images set the scale:
  no OOD image is needed to compute it. Its values span orders of magnitude, so the logistic regression is fitted on
  its logarithm (a monotonic change: the AUROC is the same).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from labkit.core import layout
from labkit.core.errors import ConfigError, IncompatibleError
from labkit.core.files import save_figure
from labkit.evaluation import register
from labkit.evaluation.embed import extract

log = logging.getLogger(__name__)

CONF_DATA = layout.CONF_DIR / "data"
SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}
SCORES = ("l2", "normalized")


class UniformNoise:
    """Seeded uniform-noise uint8 images shaped like ``data``'s, as many per split as ``data`` has."""

    name = "uniform"

    def __init__(self, data, seed: int = 0):
        self.data = data
        self.seed = seed
        self.batch_size = int(data.eval_batch_size)
        self.channels = data.channels

    def loader(self, split: str):
        n = split_size(self.data, split)
        gen = torch.Generator().manual_seed(self.seed * 1000 + 7919 + SPLIT_OFFSET.get(split, 3))
        shape = tuple(self.data.input_shape)
        for start in range(0, n, self.batch_size):
            b = min(self.batch_size, n - start)
            yield torch.randint(0, 256, (b, *shape), generator=gen, dtype=torch.uint8), torch.zeros(b, dtype=torch.long)


class Normalized:
    """Another image source seen through the run's data module: its ``transform`` (normalization, crop)."""

    def __init__(self, source, data):
        self.source, self.data = source, data

    def loader(self, split: str):
        return self.source.loader(split)

    def transform(self, x, train: bool):
        return self.data.transform(x, train=False)


def split_size(data, split: str) -> int:
    loader = data.loader(split)
    try:
        return len(loader.dataset)
    except TypeError:
        return sum(len(b[1]) for b in loader)


def ood_names() -> list[str]:
    return sorted(["uniform", *(p.stem for p in CONF_DATA.glob("*.yaml"))])


def ood_source(name: str, data, seed: int = 0):
    """The OOD image source ``name``: ``uniform`` or a data config (``conf/data/<name>.yaml`` or a yaml path),
    composed with the run's data directory, seed, image size and validation fraction."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    if name == "uniform":
        return UniformNoise(data, seed)
    path = Path(name) if name.endswith((".yaml", ".yml")) else CONF_DATA / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"ood={name!r} is invalid: {path} does not exist; choose one of {', '.join(ood_names())}")
    node = OmegaConf.load(path)
    node.pop("defaults", None)
    ctx = OmegaConf.create({"paths": {"data_dir": str(data.data_dir)}, "seed": int(data.seed or 0)})
    ctx.data = node
    resolved = OmegaConf.to_container(ctx, resolve=True)["data"]
    resolved["data_dir"] = str(data.data_dir)
    for key in ("image_size", "eval_batch_size"):  # the run's geometry
        if key in resolved:
            resolved[key] = getattr(data, key)
    if "val_size" in resolved:  # the same fraction of validation images as the run's data
        n_val, n_train = split_size(data, "val"), split_size(data, "train")
        if n_val and n_train:
            resolved["val_size"] = n_val / (n_val + n_train)
    if "keep_on_device" in resolved:
        resolved["keep_on_device"] = False
    ood = instantiate(resolved)
    if ood.channels != data.channels:
        raise IncompatibleError(f"ood={name!r} has {ood.channels}-channel images but the run's data "
                                f"'{data.name}' has {data.channels}: choose an OOD set with the same channels")
    ood.setup("test")
    return ood


def reconstruction_errors(task, source, split: str, desc: str) -> np.ndarray:
    """Per-image L2 norm of ``x - model(x)`` over the normalized pixels, (N,)."""
    return np.linalg.norm(residuals(task, source, split, desc), axis=1)


def residuals(task, source, split: str, desc: str) -> np.ndarray:
    """Per-image ``x - model(x)`` over the normalized pixels, flattened: (N, C*H*W), float64."""
    model = task.model
    res, _ = extract(lambda x: (x - model(x)).flatten(1), source, split, module=model, desc=desc)
    return res.astype(np.float64)


class PixelScale:
    """Each pixel's residual spread on the in-distribution training split (what ``anomaly_score=normalized``
    divides by); a floor of 1% of the mean spread keeps pixels that are always reconstructed exactly finite."""

    def __init__(self, train_residuals: np.ndarray):
        sd = train_residuals.std(axis=0)
        self.sd = np.maximum(sd, 0.01 * float(sd.mean()) or 1e-12)

    def __call__(self, res: np.ndarray) -> np.ndarray:
        return np.linalg.norm(res / self.sd, axis=1)


def scores_of(res: np.ndarray, scale: PixelScale | None) -> dict[str, np.ndarray]:
    """Every score of residuals ``res`` (N, D): ``l2`` and, with the in-distribution pixel scale, ``normalized``."""
    out = {"l2": np.linalg.norm(res, axis=1)}
    if scale is not None:
        out["normalized"] = scale(res)
    return out


def boxplot(errors: dict[str, np.ndarray], threshold: float | None, path: Path, title: str,
            ylabel: str = "reconstruction error (L2 norm, normalized pixels)") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5), dpi=110)
    ax.boxplot(list(errors.values()), showfliers=True)
    ax.set_xticks(range(1, len(errors) + 1), list(errors.keys()))
    if threshold is not None and np.isfinite(threshold):
        ax.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"logistic-regression threshold {threshold:.2f}")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def fit_detector(in_err: np.ndarray, ood_err: np.ndarray, log_scale: bool = False):
    """Logistic regression on the (standardized) error, OOD = 1; returns (model, threshold in error units).
    ``log_scale``: fit on the logarithm of the error (for scores spanning orders of magnitude, whose largest values
    would otherwise set the standardization and pull the threshold away from the gap between the populations)."""
    from sklearn.linear_model import LogisticRegression

    def feature(e: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(e, 1e-12)) if log_scale else e

    x = feature(np.concatenate([in_err, ood_err]))
    mu, sd = float(x.mean()), float(x.std()) or 1.0
    y = np.concatenate([np.zeros(len(in_err)), np.ones(len(ood_err))])
    lr = LogisticRegression(class_weight="balanced").fit(((x - mu) / sd)[:, None], y)
    w, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    threshold = mu + sd * (-b / w) if w != 0 else float("nan")
    if log_scale:
        threshold = float(np.exp(threshold))

    def predict(e: np.ndarray) -> np.ndarray:
        return lr.predict(((feature(e) - mu) / sd)[:, None]).astype(int)

    return predict, threshold


@register("anomaly", headlines=("auroc",))
def anomaly_report(task, data, cfg, out_dir: Path) -> dict:
    from sklearn.metrics import roc_auc_score

    split, out_dir = cfg.split, Path(out_dir)
    if not task.reconstructs:
        raise IncompatibleError(f"report 'anomaly' needs an autoencoder (a task that reconstructs, e.g. "
                                f"task=autoencoder), not {type(task).__name__} on {type(task.model).__name__}")
    seed = cfg.get("seed", 0) or 0
    score = str(cfg.get("anomaly_score") or "l2")
    if score not in SCORES:
        raise ConfigError(f"anomaly_score={score!r} is invalid: choose one of {', '.join(SCORES)} (l2: the notes' "
                          f"reconstruction L2; normalized: each pixel's error over its spread on {data.name} train)")
    fit_split = "train" if split == "val" else "val"
    scale = None
    if score == "normalized":
        scale = PixelScale(residuals(task, data, "train", f"residuals {data.name} train"))
    in_all = scores_of(residuals(task, data, split, f"errors {data.name} {split}"), scale)
    in_eval = in_all[score]
    report = {"split": split, "in_distribution": data.name, "samples_in": int(len(in_eval)), "score": score,
              "mean_l2_in": float(in_all["l2"].mean()), "median_l2_in": float(np.median(in_all["l2"]))}
    name = cfg.get("ood")
    if not name:
        report["ood"] = None
        report["note"] = "no OOD set: pass ood=<data config name> (e.g. ood=fashion_mnist) or ood=uniform"
        log.warning("anomaly report: %s", report["note"])
        return report
    name = str(name)
    ood = Normalized(ood_source(name, data, seed), data)
    ood_all = scores_of(residuals(task, ood, split, f"errors {name} {split}"), scale)
    ood_eval = ood_all[score]
    in_fit = scores_of(residuals(task, data, fit_split, f"errors {data.name} {fit_split}"), scale)[score]
    ood_fit = scores_of(residuals(task, ood, fit_split, f"errors {name} {fit_split}"), scale)[score]
    if not len(ood_eval) or not len(in_fit) or not len(ood_fit):
        raise ConfigError(f"anomaly report: empty split (in {len(in_fit)}/{len(in_eval)}, ood {len(ood_fit)}/"
                          f"{len(ood_eval)} images in {fit_split}/{split})")

    predict, threshold = fit_detector(in_fit, ood_fit, log_scale=score == "normalized")
    in_ok = float((predict(in_eval) == 0).mean())
    ood_ok = float((predict(ood_eval) == 1).mean())
    labels = np.concatenate([np.zeros(len(in_eval)), np.ones(len(ood_eval))])
    aurocs = {k: float(roc_auc_score(labels, np.concatenate([in_all[k], ood_all[k]]))) for k in in_all}
    auroc = aurocs[score]
    what = "reconstruction error" if score == "l2" else "per-pixel normalized reconstruction error"
    png = boxplot({f"{data.name} ({split})": in_eval, f"{name} ({split})": ood_eval}, threshold,
                  out_dir / "anomaly_boxplot.png",
                  f"{what}: {data.name} vs {name} (AUROC {auroc:.4f})",
                  "reconstruction error (L2 norm, normalized pixels)" if score == "l2" else
                  f"reconstruction error (L2 norm, pixels over their spread on {data.name} train)")
    report.update({
        "ood": name, "fit_split": fit_split, "samples_ood": int(len(ood_eval)),
        "samples_fit_in": int(len(in_fit)), "samples_fit_ood": int(len(ood_fit)),
        "mean_l2_ood": float(ood_all["l2"].mean()), "median_l2_ood": float(np.median(ood_all["l2"])),
        "auroc": auroc, **{f"auroc_{k}": v for k, v in aurocs.items()},
        ("threshold_l2" if score == "l2" else f"threshold_{score}"): float(threshold),
        "in_distribution_correct_percent": 100.0 * in_ok, "ood_correct_percent": 100.0 * ood_ok,
        "balanced_accuracy_percent": 50.0 * (in_ok + ood_ok),
        "boxplot_png": str(png),
    })
    return report
