"""TensorBoard logging shared by the tasks: the first validation batch of an epoch is kept
(:class:`FirstBatch`) and written when the epoch ends, as image grids (:func:`log_image_grids`, autoencoders)
or to the embedding projector (:func:`log_projector`, metric learning). Without a TensorBoard logger
(``logger=csv``/``none``) nothing is written.
"""
from __future__ import annotations

from typing import Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F


def attached_trainer(module: pl.LightningModule) -> pl.Trainer | None:
    """``module``'s Trainer, None when it is attached to none (``LightningModule.trainer`` raises then)."""
    try:
        return module.trainer
    except RuntimeError:
        return None


def tensorboard_writers(module: pl.LightningModule) -> list:
    """The ``SummaryWriter`` of each TensorBoard logger of ``module``'s trainer (none without a trainer)."""
    if not module.loggers:  # no trainer, or a trainer without loggers
        return []
    from pytorch_lightning.loggers import TensorBoardLogger

    return [lg.experiment for lg in module.loggers if isinstance(lg, TensorBoardLogger)]


class FirstBatch:
    """Tensors of one validation batch kept until the epoch ends: detached, on the CPU, floating point as
    float32. Nothing is kept during Lightning's sanity check, so its batch never reaches the logs."""

    def __init__(self):
        self._kept: dict[str, torch.Tensor] | None = None

    def keep(self, module: pl.LightningModule, **tensors: torch.Tensor) -> None:
        trainer = attached_trainer(module)
        if trainer is not None and trainer.sanity_checking:
            return
        self._kept = {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu()
                      for k, v in tensors.items()}

    def take(self) -> dict[str, torch.Tensor] | None:
        """The kept tensors (``None`` when nothing was kept), forgetting them."""
        kept, self._kept = self._kept, None
        return kept


# ----- images for display ----------------------------------------------------------------------------
def for_display(x: torch.Tensor, mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None) -> torch.Tensor:
    """Normalized images back in [0, 1]: the data module's normalization undone when ``mean``/``std`` match
    the channels, else the batch min-max scaled."""
    if mean is not None and std is not None and len(mean) == x.shape[1]:
        m = torch.as_tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
        s = torch.as_tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
        x = x * s + m
    else:
        lo, hi = x.amin(), x.amax()
        x = (x - lo) / (hi - lo).clamp_min(1e-8)
    return x.clamp(0, 1)


def thumbnails(x: torch.Tensor, size: int = 32) -> torch.Tensor:
    """Images min-max scaled to [0, 1] per image and shrunk to at most ``size`` pixels (projector sprites)."""
    lo = x.flatten(1).amin(1).view(-1, 1, 1, 1)
    hi = x.flatten(1).amax(1).view(-1, 1, 1, 1)
    x = (x - lo) / (hi - lo).clamp_min(1e-8)
    h, w = x.shape[-2:]
    if max(h, w) > size:
        scale = size / max(h, w)
        x = F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="bilinear",
                          antialias=True, align_corners=False)
    return x.clamp(0, 1)


# ----- writers ---------------------------------------------------------------------------------------------
def log_image_grids(module: pl.LightningModule, grids: dict[str, torch.Tensor], nrow: int = 10) -> None:
    """One ``val/<name>`` image per entry of ``grids`` (a batch of images shown ``nrow`` per row), at the
    global step, unnormalized with the data module's ``mean``/``std``."""
    writers = tensorboard_writers(module)
    if not writers:
        return
    from torchvision.utils import make_grid

    dm = getattr(module.trainer, "datamodule", None)
    mean, std = getattr(dm, "mean", None), getattr(dm, "std", None)
    for name, images in grids.items():
        img = make_grid(for_display(images, mean, std), nrow=nrow, padding=2)
        for w in writers:
            w.add_image(f"val/{name}", img, global_step=module.global_step)


def log_projector(module: pl.LightningModule, embeddings: torch.Tensor, labels: torch.Tensor,
                  images: torch.Tensor, tag: str = "val_embedding") -> None:
    """Embeddings to TensorBoard's projector at the current epoch: labels as metadata (poses as
    comma-separated numbers), :func:`thumbnails` of the images as sprites."""
    writers = tensorboard_writers(module)
    if not writers:
        return
    metadata = [str(int(v)) if v.numel() == 1 else ",".join(f"{float(t):.2f}" for t in v.flatten())
                for v in labels]
    sprites = thumbnails(images)
    for w in writers:
        w.add_embedding(embeddings, metadata=metadata, label_img=sprites, global_step=module.current_epoch, tag=tag)
