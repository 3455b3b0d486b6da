"""Localization report (note 002): image-based localization as retrieval on pose-labelled data (EgoCart).

Each query image (the evaluated split) takes the pose of its nearest gallery image (the training split)
in embedding space, found with one batched exact faiss search. Errors: position = Euclidean distance of
(x, y) in metres; orientation = angle between the unit headings (u, v) in degrees,
``arccos(clip(u_pred . u_true, -1, 1))``. The report also carries the note's two baselines computed on the
same images: raw RGB pixels resized to 32 px (note 002: 1.66 m, 11.82 deg) and the same network untrained
(note 002, a random-init MobileNetV2: 4.41 m, 36.01 deg).
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch

from labkit.core.errors import IncompatibleError
from labkit.evaluation import register
from labkit.evaluation.embed import extract, nearest
from labkit.evaluation.representation import gallery_split, option
from labkit.evaluation.retrieval import embedding_fn
from labkit.models.build import build_model
from labkit.models.embedding import RawPixels

log = logging.getLogger(__name__)

THRESHOLDS_M = (0.5, 1.0, 2.0)
RGB_BASELINE_SIZE = 32


def localization_errors(pred_pose: np.ndarray, true_pose: np.ndarray,
                        thresholds: tuple[float, ...] = THRESHOLDS_M) -> dict:
    """Mean/median position error (m), mean/median orientation error (degrees) and the share of queries whose
    position error is below each threshold. Poses are rows ``(x, y, u, v)``; headings are re-normalized."""
    pred, true = np.asarray(pred_pose, dtype=np.float64), np.asarray(true_pose, dtype=np.float64)
    pos = np.linalg.norm(pred[:, :2] - true[:, :2], axis=1)
    up = pred[:, 2:4] / np.linalg.norm(pred[:, 2:4], axis=1, keepdims=True)
    ut = true[:, 2:4] / np.linalg.norm(true[:, 2:4], axis=1, keepdims=True)
    ang = np.degrees(np.arccos(np.clip((up * ut).sum(1), -1.0, 1.0)))
    out = {"position_error_mean_m": float(pos.mean()), "position_error_median_m": float(np.median(pos)),
           "orientation_error_mean_deg": float(ang.mean()), "orientation_error_median_deg": float(np.median(ang))}
    for t in thresholds:
        out[f"within_{t:g}m"] = float((pos < t).mean())
    return out


def localize(gallery: np.ndarray, gallery_poses: np.ndarray, queries: np.ndarray,
             query_poses: np.ndarray) -> dict:
    """1-NN localization (one batched faiss search) and its :func:`localization_errors`."""
    _, idx = nearest(gallery, queries, 1)
    return localization_errors(gallery_poses[idx[:, 0]], query_poses)


def _evaluate(fn, module, data, gsplit: str, split: str, what: str) -> dict:
    gallery, g_pose = extract(fn, data, gsplit, module=module, desc=f"{what}: {gsplit}")
    queries, q_pose = extract(fn, data, split, module=module, desc=f"{what}: {split}")
    return {"features": int(queries.shape[1]), **localize(gallery, g_pose, queries, q_pose)}


def untrained_copy(task, seed: int):
    """The task's network rebuilt from its config with a fresh init (``init_from`` dropped; ImageNet weights
    only when the run itself started from them), and a description of that init."""
    cfg = copy.deepcopy(dict(task.hparams.model))
    cfg.pop("init_from", None)
    pretrained = cfg.get("pretrained")
    torch.manual_seed(seed)
    model = build_model(cfg)
    init = f"ImageNet weights (model.pretrained={pretrained})" if pretrained else f"random init (torch seed {seed})"
    return model, init


@register("localization", headlines=("position_error_median_m", "orientation_error_median_deg"))
def localization_report(task, data, cfg, out_dir: Path) -> dict:
    if data.label_kind != "pose":
        raise IncompatibleError(f"the localization report needs pose-labelled data (data=egocart), but data "
                                f"'{data.name}' has {data.label_kind} labels: use reports=[retrieval]")
    split = cfg.split
    gsplit = gallery_split(split)
    seed = option(cfg, "seed", 0, minimum=0)
    fn, desc = embedding_fn(task)
    report = {"split": split, "gallery_split": gsplit, "gallery_samples": int(len(data.poses(gsplit))),
              "query_samples": int(len(data.poses(split))), "embedding": desc}
    report.update(_evaluate(fn, task, data, gsplit, split, "embedding"))
    # baselines on the same images and splits: baseline_rgb32_* and baseline_untrained_* keys
    if cfg.get("baselines", True):
        rgb = RawPixels(RGB_BASELINE_SIZE)
        base = _evaluate(rgb, rgb, data, gsplit, split, f"raw RGB at {RGB_BASELINE_SIZE} px")
        report.update({f"baseline_rgb32_{k}": v for k, v in base.items()})
        if any(True for _ in task.model.parameters()):
            model, init = untrained_copy(task, seed)
            base = _evaluate(model, model, data, gsplit, split, "untrained network")
            report["baseline_untrained_init"] = init
            report.update({f"baseline_untrained_{k}": v for k, v in base.items()})
    log.info("localization: %.2f m, %.2f deg (mean errors)", report["position_error_mean_m"],
             report["orientation_error_mean_deg"])
    return report
