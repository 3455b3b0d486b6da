"""Retrieval report: how well the embedding space groups classes, queried with one split against another.

Queries are the evaluated split, the gallery is the training split (validation when evaluating train).
Embeddings come from ``task.embed`` (tasks that declare ``embeds``: metric learning) or, for any other task, from
the network's penultimate features: the input of its head (:class:`labkit.models.heads.Penultimate`), spatially
averaged when it is a feature map. Metrics, from pytorch-metric-learning's ``AccuracyCalculator`` (exact faiss search
with k = the largest class count of the gallery):

* ``nn1_accuracy`` / ``precision_at_1``: the nearest gallery item has the query's label (the same number);
* ``knn_accuracy``: majority vote of the ``knn_k`` nearest (:func:`labkit.evaluation.embed.knn_predict`);
* ``r_precision`` and ``map_at_r``: Musgrave et al., "A Metric Learning Reality Check" (ECCV 2020): with R the
  number of gallery items of the query's class, MAP@R = mean over queries of 1/R sum_{i<=R} P(i) rel(i).

plus a t-SNE PNG of (at most ``tsne_samples``) query embeddings. On data labelled with poses (EgoCart) the
retrieval report is the localization report.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from labkit.evaluation import get_report, register
from labkit.evaluation.embed import extract, knn_predict, tsne_plot
from labkit.evaluation.representation import gallery_split, option
from labkit.models.heads import Penultimate

log = logging.getLogger(__name__)

# at most this many neighbour entries (queries x k) per faiss search call, to bound memory
SEARCH_BUDGET = 20_000_000


def embedding_fn(task) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """(function image batch -> (N, D) embeddings, its description) for any task."""
    if task.embeds:
        return task.embed, f"{type(task).__name__}.embed ({type(task.model).__name__} output)"
    pen = Penultimate(task.model)
    where = f"input of {pen.layer_name}" if pen.layer is not None else "network output"
    return pen, f"penultimate features of {type(task.model).__name__} ({where})"


def retrieval_metrics(gallery: np.ndarray, gallery_labels: np.ndarray, queries: np.ndarray,
                      query_labels: np.ndarray) -> dict:
    """Precision@1, R-precision and MAP@R (Musgrave et al. 2020) with exact L2 search, computed by
    pytorch-metric-learning's ``AccuracyCalculator`` (the paper's authors' own implementation), in chunks of queries
    that bound the neighbour table to :data:`SEARCH_BUDGET` entries.

    Queries whose class is absent from the gallery count as misses in precision@1 and are left out of
    R-precision and MAP@R (R = 0).
    """
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    classes, counts = np.unique(gallery_labels, return_counts=True)
    pos = np.clip(np.searchsorted(classes, query_labels), 0, len(classes) - 1)
    r = np.where(classes[pos] == query_labels, counts[pos], 0)
    valid = r > 0
    nan = float("nan")
    if not valid.any():
        return {"precision_at_1": 0.0 if len(queries) else nan, "r_precision": nan, "map_at_r": nan,
                "queries_without_class_in_gallery": int((~valid).sum())}
    k = min(int(r.max()), len(gallery))  # the largest R: what MAP@R needs ("max_bin_count")
    calc = AccuracyCalculator(include=("precision_at_1", "r_precision", "mean_average_precision_at_r"), k=k,
                              device=torch.device("cpu"))
    ref, ref_y = torch.from_numpy(np.ascontiguousarray(gallery, dtype=np.float32)), torch.from_numpy(gallery_labels)
    # only the queries whose class is in the gallery (PML leaves the others out of every figure); sums over chunks
    idx = np.flatnonzero(valid)
    sums = {"precision_at_1": 0.0, "r_precision": 0.0, "mean_average_precision_at_r": 0.0}
    step = max(1, SEARCH_BUDGET // k)
    for s in range(0, len(idx), step):
        chunk = idx[s:s + step]
        q = torch.from_numpy(np.ascontiguousarray(queries[chunk], dtype=np.float32))
        acc = calc.get_accuracy(q, torch.from_numpy(query_labels[chunk]), ref, ref_y, ref_includes_query=False)
        for key in sums:
            sums[key] += float(acc[key]) * len(chunk)
    n_valid = len(idx)
    return {"precision_at_1": sums["precision_at_1"] / len(queries),  # a query without its class is a miss
            "r_precision": sums["r_precision"] / n_valid,
            "map_at_r": sums["mean_average_precision_at_r"] / n_valid,
            "queries_without_class_in_gallery": int((~valid).sum())}


@register("retrieval", headlines=("precision_at_1", "map_at_r"))
def retrieval_report(task, data, cfg, out_dir: Path) -> dict:
    if data.label_kind == "pose":
        log.info("pose-labelled data: the retrieval report is the localization report")
        return get_report("localization")(task, data, cfg, out_dir)
    split, out_dir = cfg.split, Path(out_dir)
    k = option(cfg, "knn_k", 1)
    n_tsne = option(cfg, "tsne_samples", 1000, minimum=0)
    seed = option(cfg, "seed", 0, minimum=0)
    gsplit = gallery_split(split)
    fn, desc = embedding_fn(task)
    gallery, g_y = extract(fn, data, gsplit, module=task, desc=f"embedding {gsplit}")
    queries, q_y = extract(fn, data, split, module=task, desc=f"embedding {split}")
    report = {"split": split, "gallery_split": gsplit, "gallery_samples": int(len(g_y)),
              "query_samples": int(len(q_y)), "embedding": desc, "embedding_dim": int(queries.shape[1]),
              "knn_k": k, "knn_accuracy": float((knn_predict(gallery, g_y, queries, k) == q_y).mean())}
    report.update(retrieval_metrics(gallery, g_y, queries, q_y))
    report["nn1_accuracy"] = report["precision_at_1"]
    if n_tsne:
        classes = list(data.classes or []) or None
        png = tsne_plot(queries, q_y, out_dir / "tsne_embeddings.png", n=n_tsne, seed=seed, classes=classes,
                        title=f"t-SNE of {min(n_tsne, len(q_y))} {split} embeddings ({type(task.model).__name__})")
        report["tsne_png"] = str(png)
    return report
