"""Reports on learned codes (note 003, section 4): kNN on codes vs raw pixels, the few-shot protocol,
t-SNE, TensorBoard's embedding projector, and the storage saved by keeping codes instead of images.

Both work on any task that encodes (``task.encodes``: autoencoders, a classifier on an :class:`EncoderClassifier`).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from labkit.core.errors import ConfigError, IncompatibleError
from labkit.evaluation import register
from labkit.evaluation.embed import extract, knn_predict, tsne_plot


def encoder_of(task, report: str):
    if not task.encodes:
        raise IncompatibleError(f"report '{report}' needs a model with encode(x), but "
                                f"{type(task.model).__name__} has none; it applies to autoencoders")
    return task.encode


def option(cfg, key: str, default, minimum: int = 1) -> int:
    """Integer evaluation option ``cfg.<key>`` (``default`` when missing or null), checked."""
    value = cfg.get(key, default)
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}={value!r} is invalid: it must be an integer >= {minimum}")
    return value


@torch.no_grad()
def code_shape(task, input_shape) -> list[int]:
    device = next(task.model.parameters()).device
    return list(task.encode(torch.zeros(1, *input_shape, device=device)).shape[1:])


def gallery_split(split: str) -> str:
    """Labelled samples the kNN classifier may use: the training split (validation when evaluating train)."""
    return "val" if split == "train" else "train"


def unnormalize(x: torch.Tensor, data) -> torch.Tensor:
    """Normalized model input -> images in [0, 1] (data.mean/std), for display."""
    mean, std = data.mean, data.std
    if mean is not None and std is not None:
        x = x * torch.as_tensor(std).view(1, -1, 1, 1) + torch.as_tensor(mean).view(1, -1, 1, 1)
    return x.clamp(0, 1)


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float((pred == y).mean()) if len(y) else float("nan")


def few_shot(g_codes, g_pix, g_y, q_codes, q_pix, q_y, shots: int, draws: int, k: int, seed: int) -> dict:
    """Note 003's protocol: kNN with only ``shots`` labelled gallery samples, on codes and on pixels,
    over ``draws`` seeded draws (the same draws for both)."""
    shots = min(shots, len(g_y))
    k = min(k, shots)
    codes_acc, pix_acc = [], []
    for d in range(draws):
        idx = np.random.default_rng(seed + d).choice(len(g_y), size=shots, replace=False)
        codes_acc.append(accuracy(knn_predict(g_codes[idx], g_y[idx], q_codes, k), q_y))
        pix_acc.append(accuracy(knn_predict(g_pix[idx], g_y[idx], q_pix, k), q_y))
    return {
        "fewshot_shots": int(shots), "fewshot_draws": int(draws),
        "fewshot_accuracy_codes_mean": float(np.mean(codes_acc)),
        "fewshot_accuracy_codes_std": float(np.std(codes_acc)),
        "fewshot_accuracy_pixels_mean": float(np.mean(pix_acc)),
        "fewshot_accuracy_pixels_std": float(np.std(pix_acc)),
        "fewshot_accuracy_codes": codes_acc, "fewshot_accuracy_pixels": pix_acc,
    }


def write_projector(codes: np.ndarray, images: torch.Tensor, labels: np.ndarray, classes, out: Path,
                    tag: str = "codes") -> Path:
    """Codes with class metadata and image thumbnails for TensorBoard's projector (``tensorboard --logdir out``)."""
    from torch.utils.tensorboard import SummaryWriter

    shutil.rmtree(out, ignore_errors=True)
    names = [str(classes[int(c)]) if classes is not None and int(c) < len(classes) else str(int(c)) for c in labels]
    writer = SummaryWriter(log_dir=str(out))
    try:
        writer.add_embedding(torch.from_numpy(codes), metadata=names, label_img=images, tag=tag, global_step=0)
    finally:
        writer.close()
    return out


@register("representation", headlines=("knn_accuracy_codes", "fewshot_accuracy_codes_mean"),
          baselines=("knn_accuracy_pixels", "fewshot_accuracy_pixels_mean"))
def representation_report(task, data, cfg, out_dir: Path) -> dict:
    """kNN accuracy on codes vs pixels (whole gallery, then ``shots`` labelled samples over ``draws`` draws),
    a t-SNE PNG of ``tsne_samples`` codes and the same codes in TensorBoard's projector."""
    split, out_dir = cfg.split, Path(out_dir)
    k = option(cfg, "knn_k", 1)
    shots, draws = option(cfg, "shots", 100), option(cfg, "draws", 5)
    n_tsne = option(cfg, "tsne_samples", 1000, minimum=0)
    seed = option(cfg, "seed", 0, minimum=0)
    encode = encoder_of(task, "representation")
    gsplit = gallery_split(split)

    g_codes, g_y = extract(encode, data, gsplit, module=task.model, desc=f"encoding {gsplit}")
    q_codes, q_y = extract(encode, data, split, module=task.model, desc=f"encoding {split}")
    g_pix, _ = extract(lambda x: x, data, gsplit, desc=f"pixels {gsplit}")
    q_pix, _ = extract(lambda x: x, data, split, desc=f"pixels {split}")
    classes = list(data.classes or [])
    n_classes = len(np.unique(np.concatenate([g_y, q_y])))

    report = {
        "split": split, "gallery_split": gsplit, "gallery_samples": int(len(g_y)), "query_samples": int(len(q_y)),
        "code_shape": code_shape(task, data.input_shape),
        "code_dim": int(q_codes.shape[1]), "pixel_dim": int(q_pix.shape[1]), "knn_k": k,
        "chance_accuracy": 1.0 / max(n_classes, 1),
        "knn_accuracy_codes": accuracy(knn_predict(g_codes, g_y, q_codes, k), q_y),
        "knn_accuracy_pixels": accuracy(knn_predict(g_pix, g_y, q_pix, k), q_y),
    }
    report.update(few_shot(g_codes, g_pix, g_y, q_codes, q_pix, q_y, shots, draws, k, seed))

    if n_tsne:
        png = tsne_plot(q_codes, q_y, out_dir / "tsne_codes.png", n=n_tsne, seed=seed, classes=classes or None,
                        title=f"t-SNE of {min(n_tsne, len(q_y))} {split} codes ({type(task.model).__name__})")
        report["tsne_png"] = str(png)
        # the same samples as the t-SNE plot (tsne_plot draws them with this generator)
        sel = np.random.default_rng(seed).choice(len(q_y), size=min(n_tsne, len(q_y)), replace=False)
        thumbs = unnormalize(torch.from_numpy(q_pix[sel]).view(len(sel), *data.input_shape), data)
        proj = write_projector(q_codes[sel], thumbs, q_y[sel], classes or None, out_dir / "projector")
        report["projector_dir"] = str(proj)
        report["projector_samples"] = int(len(sel))
    return report


@register("compression", headlines=("compression_ratio_float32",))
def compression_report(task, data, cfg, out_dir: Path) -> dict:
    """Bytes of the split stored as uint8 images vs float32 and float16 codes (note 003, section 4.2), and
    the reconstruction error (MSE on normalized pixels) from float32 and from float16 codes."""
    split = cfg.split
    encode = encoder_of(task, "compression")
    codes, _ = extract(encode, data, split, module=task.model, desc=f"encoding {split}")
    n = len(codes)
    image_bytes = int(n * int(np.prod(data.input_shape)))  # one uint8 per pixel and channel
    f32, f16 = int(codes.astype(np.float32).nbytes), int(codes.astype(np.float16).nbytes)
    report = {
        "split": split, "samples": n, "image_shape": list(data.input_shape), "code_dim": int(codes.shape[1]),
        "bytes_images_uint8": image_bytes, "bytes_codes_float32": f32, "bytes_codes_float16": f16,
        # the note's "compression ratio": 100 - codes / images * 100
        "percent_smaller_float32": 100.0 - f32 / image_bytes * 100.0,
        "percent_smaller_float16": 100.0 - f16 / image_bytes * 100.0,
        "compression_ratio_float32": image_bytes / f32, "compression_ratio_float16": image_bytes / f16,
    }
    if task.reconstructs:
        def errors(x):
            z = encode(x)
            r32 = task.decode(z)
            r16 = task.decode(z.half().float())
            return torch.stack([(r32 - x).pow(2).flatten(1).mean(1), (r16 - x).pow(2).flatten(1).mean(1)], 1)

        err, _ = extract(errors, data, split, module=task.model, desc=f"decoding {split}")
        report["reconstruction_mse_float32"] = float(err[:, 0].mean())
        report["reconstruction_mse_float16"] = float(err[:, 1].mean())
    return report
