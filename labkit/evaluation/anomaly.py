"""Anomaly detection from reconstruction error (note 003, section 4.3).

Each image's score is the L2 norm of ``input - reconstruction`` over its normalized pixels. The
out-of-distribution images (``ood=<data config name>``, e.g. ``fashion_mnist``, or ``ood=uniform``)
are normalized with the *run's* data module (its mean and std), as the network saw its own data.

Protocol: a logistic regression on the error (the note's detector) is fitted on the validation split
of both populations (the training split when evaluating ``split=val``), then evaluated on ``split``
of both: the percentage of in-distribution and of OOD images it classifies correctly. AUROC uses the
error itself as the OOD score on the evaluated split. A box plot of both populations is saved.
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
    model = task.model
    err, _ = extract(lambda x: (x - model(x)).flatten(1).norm(dim=1, keepdim=True), source, split,
                     module=model, desc=desc)
    return err[:, 0].astype(np.float64)


def boxplot(errors: dict[str, np.ndarray], threshold: float | None, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5), dpi=110)
    ax.boxplot(list(errors.values()), showfliers=True)
    ax.set_xticks(range(1, len(errors) + 1), list(errors.keys()))
    if threshold is not None and np.isfinite(threshold):
        ax.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"logistic-regression threshold {threshold:.2f}")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_ylabel("reconstruction error (L2 norm, normalized pixels)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def fit_detector(in_err: np.ndarray, ood_err: np.ndarray):
    """Logistic regression on the (standardized) error, OOD = 1; returns (model, threshold in error units)."""
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([in_err, ood_err])
    mu, sd = float(x.mean()), float(x.std()) or 1.0
    y = np.concatenate([np.zeros(len(in_err)), np.ones(len(ood_err))])
    lr = LogisticRegression(class_weight="balanced").fit(((x - mu) / sd)[:, None], y)
    w, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    threshold = mu + sd * (-b / w) if w != 0 else float("nan")

    def predict(e: np.ndarray) -> np.ndarray:
        return lr.predict(((e - mu) / sd)[:, None]).astype(int)

    return predict, threshold


@register("anomaly", headlines=("auroc",))
def anomaly_report(task, data, cfg, out_dir: Path) -> dict:
    from sklearn.metrics import roc_auc_score

    split, out_dir = cfg.split, Path(out_dir)
    if not task.reconstructs:
        raise IncompatibleError(f"report 'anomaly' needs an autoencoder (a task that reconstructs, e.g. "
                                f"task=autoencoder), not {type(task).__name__} on {type(task.model).__name__}")
    seed = cfg.get("seed", 0) or 0
    in_eval = reconstruction_errors(task, data, split, f"errors {data.name} {split}")
    report = {"split": split, "in_distribution": data.name, "samples_in": int(len(in_eval)),
              "mean_l2_in": float(in_eval.mean()), "median_l2_in": float(np.median(in_eval))}
    name = cfg.get("ood")
    if not name:
        report["ood"] = None
        report["note"] = "no OOD set: pass ood=<data config name> (e.g. ood=fashion_mnist) or ood=uniform"
        log.warning("anomaly report: %s", report["note"])
        return report
    name = str(name)
    fit_split = "train" if split == "val" else "val"
    ood = Normalized(ood_source(name, data, seed), data)
    ood_eval = reconstruction_errors(task, ood, split, f"errors {name} {split}")
    in_fit = reconstruction_errors(task, data, fit_split, f"errors {data.name} {fit_split}")
    ood_fit = reconstruction_errors(task, ood, fit_split, f"errors {name} {fit_split}")
    if not len(ood_eval) or not len(in_fit) or not len(ood_fit):
        raise ConfigError(f"anomaly report: empty split (in {len(in_fit)}/{len(in_eval)}, ood {len(ood_fit)}/"
                          f"{len(ood_eval)} images in {fit_split}/{split})")

    predict, threshold = fit_detector(in_fit, ood_fit)
    in_ok = float((predict(in_eval) == 0).mean())
    ood_ok = float((predict(ood_eval) == 1).mean())
    scores = np.concatenate([in_eval, ood_eval])
    labels = np.concatenate([np.zeros(len(in_eval)), np.ones(len(ood_eval))])
    auroc = float(roc_auc_score(labels, scores))
    png = boxplot({f"{data.name} ({split})": in_eval, f"{name} ({split})": ood_eval}, threshold,
                  out_dir / "anomaly_boxplot.png",
                  f"reconstruction error: {data.name} vs {name} (AUROC {auroc:.4f})")
    report.update({
        "ood": name, "fit_split": fit_split, "samples_ood": int(len(ood_eval)),
        "samples_fit_in": int(len(in_fit)), "samples_fit_ood": int(len(ood_fit)),
        "mean_l2_ood": float(ood_eval.mean()), "median_l2_ood": float(np.median(ood_eval)),
        "auroc": auroc, "threshold_l2": float(threshold),
        "in_distribution_correct_percent": 100.0 * in_ok, "ood_correct_percent": 100.0 * ood_ok,
        "balanced_accuracy_percent": 50.0 * (in_ok + ood_ok),
        "boxplot_png": str(png),
    })
    return report
