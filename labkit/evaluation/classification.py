"""Classification report: accuracy, error (a fraction, 1 - accuracy), top-5, per-class accuracy (with each class's
sample count) and a confusion-matrix PNG."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from labkit.core.files import save_figure
from labkit.evaluation import register
from labkit.evaluation.embed import extract


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def plot_confusion(cm: np.ndarray, classes, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(cm)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = min(4 + n * 0.35, 20)
    fig, ax = plt.subplots(figsize=(size, size * 0.9), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    if n <= 30:
        ax.set_xticks(range(n), [str(c) for c in classes[:n]], rotation=90, fontsize=7)
        ax.set_yticks(range(n), [str(c) for c in classes[:n]], fontsize=7)
        if n <= 15:
            for i in range(n):
                for j in range(n):
                    if cm[i, j]:
                        ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return save_figure(fig, path)


@register("classification", headlines=("accuracy",))
def classification_report(task, data, cfg, out_dir: Path) -> dict:
    split = cfg.split
    logits, labels = extract(task, data, split, module=task, desc=f"classifying {split}")
    n = logits.shape[1]
    pred = logits.argmax(1)
    acc = float((pred == labels).mean())
    cm = confusion_matrix(labels, pred, n)
    per_class = cm.diagonal() / np.maximum(cm.sum(1), 1)
    classes = list(data.classes or range(n))
    names = [str(classes[i]) if i < len(classes) else str(i) for i in range(n)]
    report = {"split": split, "samples": int(len(labels)), "accuracy": acc, "error": 1 - acc,
              "per_class_accuracy": {names[i]: float(per_class[i]) for i in range(n)},
              "per_class_count": {names[i]: int(cm[i].sum()) for i in range(n)}}
    if n > 5:
        top5 = torch.from_numpy(logits).topk(5, dim=1).indices.numpy()
        report["top5_accuracy"] = float((top5 == labels[:, None]).any(1).mean())
    png = plot_confusion(cm, classes, Path(out_dir) / "confusion_matrix.png",
                         f"{split} confusion matrix (accuracy {acc:.4f})")
    report["confusion_matrix_png"] = str(png)
    np.savetxt(Path(out_dir) / "confusion_matrix.csv", cm, fmt="%d", delimiter=",")
    return report
