"""``predict(cfg)``: run a finished run's network on your own image files.

The images go through the run's own evaluation pipeline: converted to the run's channels (grey <-> RGB, alpha
composited on white, 16-bit scaled), resized and centre-cropped to the network's input the way its data module
prepares evaluation images, and normalized with the run's mean/std. Results go to
``<run>/predictions/<timestamp>/``: ``predictions.csv`` and ``predictions.png`` (a grid of the images with what the
network says about them); ``predictions.png`` also goes to the loggers the run was trained with (``loggers: true``).
What is predicted depends on what the run's task declares (``embeds``, ``reconstructs``,
see :class:`labkit.tasks.base.LabTask`):

- classifiers: the top-k classes by name with their probabilities;
- embedding networks (``embeds``: siamese/triplet): the k nearest training images with their labels (and the majority
  label);
- autoencoders (``reconstructs``): the reconstruction beside each input and its reconstruction error (the anomaly
  score), with the fraction of the run's test images that reconstruct worse.
"""
from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from labkit.cli.inputs import IMAGE_EXTENSIONS, NoInputsError, collect_inputs, no_inputs  # noqa: F401
from labkit.core import files
from labkit.core.errors import ConfigError
from labkit.run import directory as runs

log = logging.getLogger("labkit")

@dataclass
class Inputs:
    """Readable images (path, PIL image in the run's mode) and the files skipped with the reason."""

    images: list[tuple[Path, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


# ----- finding and reading the files ---------------------------------------------------------------
def open_image(path: Path, channels: int):
    """The image file as a PIL image of mode ``L`` (channels=1) or ``RGB``: EXIF rotation applied, transparency
    composited on white, 16-bit and float images scaled to 0..255."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            a = np.asarray(im, dtype=np.float64)
            top = 65535.0 if im.mode.startswith("I;16") else max(float(a.max()), 1.0)
            if im.mode == "F" and a.max() <= 1.0:
                top = 1.0
            im = Image.fromarray(np.clip(a / top * 255.0, 0, 255).round().astype(np.uint8))
        if im.mode == "P":
            im = im.convert("RGBA")
        if im.mode in ("RGBA", "LA", "PA"):
            white = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(white, im.convert("RGBA"))
        return im.convert("L" if channels == 1 else "RGB")


def read_inputs(inputs, channels: int) -> Inputs:
    """Open every input; unreadable files are listed in ``skipped``. Raises :class:`NoInputsError` when
    nothing readable is left."""
    files, skipped = collect_inputs(inputs)
    out = Inputs(skipped=list(skipped))
    for f in files:
        try:
            out.images.append((f, open_image(f, channels)))
        except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError...
            out.skipped.append((str(f), f"unreadable: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
    if not out.images:
        raise no_inputs(inputs, out.skipped)
    return out


# ----- the run's evaluation transforms -------------------------------------------------------------
def _input_hw(data) -> tuple[int, int]:
    """Height and width of the images the data module stores for evaluation (before its own crop)."""
    splits = getattr(data, "splits", None) or {}
    for split in ("test", "train", "val"):
        x = getattr(splits.get(split), "x", None)
        shape = getattr(x, "shape", None)
        if shape is not None and len(shape) == 4 and shape[0] > 0:
            return int(shape[-2]), int(shape[-1])
    return data.image_size, data.image_size


def _cover_crop(img, h: int, w: int):
    """Resize (keeping the aspect) so the image covers h x w, then centre-crop to exactly h x w."""
    from PIL import Image

    iw, ih = img.size
    scale = max(h / ih, w / iw)
    nw, nh = max(w, round(iw * scale)), max(h, round(ih * scale))
    if (nw, nh) != (iw, ih):
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - w) // 2, (nh - h) // 2
    return img.crop((left, top, left + w, top + h))


def _border_colour(img):
    """The image's background: the median of its outermost rows and columns, per channel."""
    a = np.asarray(img)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]).reshape(-1, 1 if a.ndim == 2 else a.shape[2])
    value = np.median(border, axis=0).round().astype(int)
    return int(value[0]) if a.ndim == 2 else tuple(int(v) for v in value)


def _contain_pad(img, h: int, w: int):
    """Resize (keeping the aspect) so the whole image fits in h x w, then pad to exactly h x w with its own
    background colour: nothing of the image is cut off (a tall digit keeps its top)."""
    from PIL import Image

    iw, ih = img.size
    scale = min(h / ih, w / iw)
    nw, nh = max(1, round(iw * scale)), max(1, round(ih * scale))
    if (nw, nh) != (iw, ih):
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    canvas = Image.new(img.mode, (w, h), _border_colour(img))
    canvas.paste(img, ((w - nw) // 2, (h - nh) // 2))
    return canvas


FITS = ("pad", "crop")


def fit_image(img, h: int, w: int, fit: str = "pad"):
    """``fit=pad`` (whole image, padded with its background) or ``crop`` (cover, then centre-crop)."""
    if fit not in FITS:
        raise ConfigError(f"fit={fit!r} is invalid: use pad (the whole image, padded) or crop (centre-crop)")
    return _contain_pad(img, h, w) if fit == "pad" else _cover_crop(img, h, w)


def should_invert(img, data, invert) -> bool:
    """``invert``: true/false, or ``auto``: a grey image whose brightness is on the other side of 0.5 than the
    training images' mean (a dark digit photographed on white paper for MNIST's white-on-black digits)."""
    if isinstance(invert, bool):
        return invert
    if str(invert).lower() != "auto":
        raise ConfigError(f"invert={invert!r} is invalid: use auto, true or false")
    if data.channels != 1 or not data.mean:
        return False
    mean = float(np.asarray(img, dtype=np.float32).mean()) / 255.0
    return (mean > 0.5) != (float(data.mean[0]) > 0.5)


def preprocess(images: Sequence, data, invert="auto", fit: str = "pad") -> tuple[torch.Tensor, list[bool]]:
    """A normalized float batch (N, C, H, W) at the network's input size from PIL images, through the run's
    evaluation transforms, and which images were inverted. ``fit=pad`` keeps the whole image (aspect kept, padded
    with its own background, after any inversion); ``crop`` covers the input and centre-crops, as datasets are."""
    from PIL import ImageOps

    flags = [should_invert(im, data, invert) for im in images]
    images = [ImageOps.invert(im) if f else im for im, f in zip(images, flags)]
    if hasattr(data, "image_transform"):  # file-based data modules: their own torchvision eval pipeline
        tf = data.image_transform(train=False)
        if fit == "pad":  # square first, so that the pipeline's shorter-side resize cuts nothing off the sides
            images = [fit_image(im, max(im.size), max(im.size), "pad") for im in images]
        return torch.stack([tf(im) for im in images]), flags
    h, w = _input_hw(data)
    arrays = []
    for im in images:
        a = np.asarray(fit_image(im, h, w, fit), dtype=np.uint8)
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    x = torch.from_numpy(np.stack(arrays)).contiguous()
    return data.transform(x, train=False).contiguous(), flags


def denormalize(x: torch.Tensor, data) -> torch.Tensor:
    """Normalized batch -> [0, 1] pixels for display."""
    if data.mean is not None and data.std is not None:
        m = torch.as_tensor(data.mean, dtype=x.dtype).view(1, -1, 1, 1)
        s = torch.as_tensor(data.std, dtype=x.dtype).view(1, -1, 1, 1)
        x = x * s + m
    return x.clamp(0, 1)


def _to_hwc(x: torch.Tensor) -> np.ndarray:
    a = x.detach().float().cpu().numpy()
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


# ----- the three kinds of prediction ------------------------------------------------------------------
def _kind(task) -> str:
    """What the task's network gives, as the task declares it: an embedding, a reconstruction, else class scores."""
    if task.embeds:
        return "embedding"
    if task.reconstructs:
        return "autoencoder"
    return "classification"


def _class_name(data, label) -> str:
    a = np.asarray(label)
    if a.ndim == 0:
        classes = list(data.classes)
        i = int(a)
        return str(classes[i]) if 0 <= i < len(classes) else str(i)
    return "(" + ", ".join(f"{v:.2f}" for v in a.ravel()[:4]) + ")"  # e.g. an EgoCart pose


@torch.no_grad()
def classify(task, x: torch.Tensor, data, topk: int) -> list[dict]:
    probs = torch.softmax(task(x).float(), dim=1)
    k = max(1, min(int(topk), probs.shape[1]))
    p, idx = probs.topk(k, dim=1)
    rows = []
    for pi, ii in zip(p.tolist(), idx.tolist()):
        row = {"prediction": _class_name(data, ii[0]), "probability": pi[0]}
        for r, (pp, c) in enumerate(zip(pi, ii), start=1):
            row[f"top{r}"], row[f"p{r}"] = _class_name(data, c), pp
        rows.append(row)
    return rows


@torch.no_grad()
def neighbours(task, x: torch.Tensor, data, k: int, device) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Rows (k nearest training images: label, distance; majority label) and (indices, labels) of them."""
    from labkit.evaluation.embed import extract, nearest

    gallery, labels = extract(task.embed, data, "train", device=device, module=task, desc="embedding train")
    q = task.embed(x.to(device)).flatten(1).float().cpu().numpy()
    k = max(1, min(int(k), len(gallery)))
    dist, idx = nearest(gallery, q, k)
    rows = []
    for d, ii in zip(dist, idx):
        names = [_class_name(data, labels[i]) for i in ii]
        row = {"prediction": max(set(names), key=lambda n: (names.count(n), -names.index(n)))}
        for r, (n, dd, i) in enumerate(zip(names, d, ii), start=1):
            row[f"neighbour{r}"], row[f"distance{r}"], row[f"train_index{r}"] = n, float(np.sqrt(max(dd, 0))), int(i)
        rows.append(row)
    return rows, idx, labels


@torch.no_grad()
def reconstruct(task, x: torch.Tensor, data, device, reference: int = 1000) -> tuple[list[dict], torch.Tensor]:
    """Rows (reconstruction error = per-image MSE in the normalized space the network was trained in, and the
    fraction of the run's test images whose error is higher) and the reconstructions."""
    task.eval().to(device)
    recon = task.decode(task.encode(x.to(device))).float().cpu()
    err = ((recon - x.float()) ** 2).flatten(1).mean(1)
    ref = []
    for xb, _ in data.loader("test"):
        xb = data.transform(xb.to(device), train=False)
        rb = task.decode(task.encode(xb))
        ref.append(((rb - xb) ** 2).flatten(1).mean(1).float().cpu())
        if sum(len(r) for r in ref) >= reference:
            break
    ref_t = torch.cat(ref) if ref else torch.zeros(0)
    rows = []
    for e in err.tolist():
        higher = float((ref_t > e).float().mean()) if len(ref_t) else float("nan")
        rows.append({"reconstruction_error": e, "test_images_with_higher_error": higher})
    return rows, recon


# ----- outputs -----------------------------------------------------------------------------------------
def _gallery_image(data, idx: int) -> np.ndarray | None:
    """Training image ``idx`` (in :meth:`loader` order) for display, HxW or HxWxC in [0, 1]."""
    splits = getattr(data, "splits", None) or {}
    if "train" in splits:
        a = torch.as_tensor(np.asarray(splits["train"].x[int(idx)]))
        return _to_hwc(a.float() / 255.0 if a.dtype == torch.uint8 else a)
    samples = getattr(data, "samples", None) or {}
    if "train" in samples and getattr(data, "images_root", None) is not None:
        try:
            return np.asarray(open_image(Path(data.images_root) / samples["train"][int(idx)][0], data.channels),
                              dtype=np.float32) / 255.0
        except Exception:  # PIL's many error types: the row goes without its picture
            return None
    return None


def _show(ax, img, title: str, fontsize: int = 8) -> None:
    ax.imshow(img, cmap="gray" if img is not None and img.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_title(title, fontsize=fontsize)
    ax.axis("off")


def plot_grid(kind: str, names: list[str], shown: list[np.ndarray], rows: list[dict], path: Path,
              extra: list[list[tuple[np.ndarray | None, str]]] | None = None) -> Path:
    """Classification: a grid of the images titled with their prediction. Embedding/autoencoder: one row per
    image, the image then ``extra`` panels (neighbours or reconstruction)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(shown)
    if kind == "classification":
        cols = min(n, 6)
        nrows = (n + cols - 1) // cols
        fig, axes = plt.subplots(nrows, cols, figsize=(2.2 * cols, 2.5 * nrows), dpi=100, squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        for i, (img, row, name) in enumerate(zip(shown, rows, names)):
            _show(axes.ravel()[i], img, f"{name[:33]}\n{row['prediction']} ({100 * row['probability']:.1f}%)")
    else:
        cols = 1 + max(len(e) for e in extra)
        fig, axes = plt.subplots(n, cols, figsize=(2.0 * cols, 2.3 * n), dpi=100, squeeze=False)
        for i, (img, name, panels) in enumerate(zip(shown, names, extra)):
            _show(axes[i, 0], img, name[:33])
            for j in range(1, cols):
                if j - 1 < len(panels) and panels[j - 1][0] is not None:
                    _show(axes[i, j], panels[j - 1][0], panels[j - 1][1])
                else:
                    axes[i, j].axis("off")
    fig.tight_layout()
    return files.save_figure(fig, path)


def write_csv(path: Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    files.atomic_write_text(path, buf.getvalue())


def format_table(rows: list[dict], columns: Sequence[str]) -> str:
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    widths = [max(len(c), *(len(cell(r.get(c, ""))) for r in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(cell(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(lines)


def _out_dir(run_dir: Path) -> Path:
    base = Path(run_dir) / "predictions" / time.strftime("%Y-%m-%d_%H-%M-%S")
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}_{n}")
    out.mkdir(parents=True)
    return out


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Predict on ``cfg.inputs`` with the run ``cfg.run``; returns {"rows", "skipped", "out_dir", "kind", ...}."""
    from labkit.cli.evaluate import load_run
    from labkit.evaluation.embed import default_device

    topk, k = cfg.get("topk", 3), cfg.get("k", 5)
    for key, v in (("topk", topk), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{key}={v!r} is invalid: it must be a positive integer")
    run_dir = runs.resolve_run(cfg.run)[0]
    saved, task, data, ckpt = load_run(cfg.run, cfg.get("ckpt", "best"), cfg.get("data_dir"), cfg.get("batch_size"))
    inputs = read_inputs(cfg.inputs, data.channels)
    device = torch.device(cfg.get("device") or default_device())
    task.eval().to(device)
    kind = _kind(task)
    paths = [p for p, _ in inputs.images]
    fit = cfg.get("fit", "pad")
    x, inverted = preprocess([im for _, im in inputs.images], data, cfg.get("invert", "auto"), fit)
    shown = [_to_hwc(t) for t in denormalize(x.float().cpu(), data)]  # what the network sees, not the file
    x = x.to(device)
    extra = None
    if kind == "classification":
        with torch.no_grad():
            rows = classify(task, x, data, topk)
        columns = ["file", "prediction", "probability"] + [f"{c}{r}" for r in range(2, min(topk, 5) + 1)
                                                           for c in ("top", "p")]
    elif kind == "embedding":
        rows, idx, _ = neighbours(task, x, data, k, device)
        extra = [[(_gallery_image(data, i), f"{r[f'neighbour{j}']}  d={r[f'distance{j}']:.2f}")
                  for j, i in enumerate(ii, start=1)] for r, ii in zip(rows, idx)]
        columns = ["file", "prediction"] + [f"neighbour{j}" for j in range(1, min(k, 5) + 1)]
    else:
        rows, recon = reconstruct(task, x, data, device)
        extra = [[(_to_hwc(r_), f"reconstruction\nerror {row['reconstruction_error']:.4f}")]
                 for r_, row in zip(denormalize(recon, data), rows)]
        columns = ["file", "reconstruction_error", "test_images_with_higher_error"]
    for p, row, inv in zip(paths, rows, inverted):
        row["file"] = str(p)
        row["inverted"] = inv
    rows = [{"file": r.pop("file"), **r} for r in rows]
    out = _out_dir(run_dir)
    write_csv(out / "predictions.csv", rows)
    if inputs.skipped:
        write_csv(out / "skipped.csv", [{"file": n, "reason": r} for n, r in inputs.skipped])
    titles = [p.name + (" (inverted)" if inv else "") for p, inv in zip(paths, inverted)]
    plot_grid(kind, titles, shown, rows, out / "predictions.png", extra)
    files.write_json(out / "predictions.json", {"run": Path(run_dir).resolve().name,
                                               "checkpoint": runs.relative_to_run(ckpt, run_dir), "kind": kind,
                                               "rows": rows, "skipped": inputs.skipped})
    print(f"run: {Path(run_dir).resolve().name} ({run_dir})\ncheckpoint: {runs.relative_to_run(ckpt, run_dir)}\n")
    print(format_table([{**r, "file": Path(r["file"]).name} for r in rows], columns))
    if any(inverted):
        names = [p.name for p, inv in zip(paths, inverted) if inv]
        print(f"\n(inverted: {len(names)} grey image(s) brighter than the training images were inverted, invert=auto: "
              f"{', '.join(names[:20])}{', ...' if len(names) > 20 else ''}; invert=false keeps them as they are)")
    if inputs.skipped:
        print(f"\nskipped {len(inputs.skipped)} file(s):")
        for n, why in inputs.skipped:
            print(f"  {n}: {why}")
    print(f"\npredictions written to {out}")
    if cfg.get("loggers", True):  # the figure to the run's TensorBoard, MLflow run and W&B run, as evaluate.py does
        from labkit.run.pictures import figures_in
        from labkit.tracking.reopen import send_pictures

        send_pictures(run_dir, saved, figures_in(out, f"predictions/{out.name}"),
                      step=int(runs.read_metrics(run_dir).get("global_step") or 0), what="predictions' figure")
    return {"rows": rows, "skipped": inputs.skipped, "out_dir": out, "kind": kind, "run": run_dir,
            "checkpoint": ckpt}


# ----- the command: python predict.py, labkit-predict ---------------------------------------------------------------
