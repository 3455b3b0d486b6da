"""Batched image transforms on uint8/float tensors of shape ``(N, C, H, W)``.

They replace the notes' per-sample PIL transforms (RandomHorizontalFlip, ColorJitter, RandomCrop,
CenterCrop, ToTensor, Normalize): one call handles a whole batch on whatever device it lives on,
each sample drawing its own random parameters.
"""
from __future__ import annotations

from typing import Sequence

import torch


def _rand(n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """Uniform [0, 1) draws made on ``device`` (or on the CPU from an explicit generator)."""
    if generator is None:
        return torch.rand(n, device=device)
    return torch.rand(n, generator=generator).to(device)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] -> float32 in [0, 1] (ToTensor); float input is returned as float32."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"crop size {size} is larger than the images ({h}x{w})")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def random_crop(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image gets its own uniformly drawn ``size x size`` window (RandomCrop without padding)."""
    n, c, h, w = x.shape
    if size > min(h, w):
        raise ValueError(f"crop size {size} is larger than the images ({h}x{w})")
    if size == h and size == w:
        return x
    dev = x.device
    top = (_rand(n, generator, dev) * (h - size + 1)).long()
    left = (_rand(n, generator, dev) * (w - size + 1)).long()
    ar = torch.arange(size, device=dev)
    rows = (top[:, None] + ar)[:, None, :, None]            # n,1,s,1
    cols = (left[:, None] + ar)[:, None, None, :]           # n,1,1,s
    batch = torch.arange(n, device=dev)[:, None, None, None]
    chan = torch.arange(c, device=dev)[None, :, None, None]
    return x[batch, chan, rows, cols]


def random_hflip(x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    flip = (_rand(x.shape[0], generator, x.device) < p).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 3:
        r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        return 0.299 * r + 0.587 * g + 0.114 * b
    return x.mean(1, keepdim=True)


def color_jitter(x: torch.Tensor, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Brightness, contrast and saturation jitter on float images in [0, 1] (factors in [1-a, 1+a]).

    With all amounts 0 this is the identity, exactly like the notes' ``transforms.ColorJitter()``.
    """
    n = x.shape[0]

    def factor(a):
        return (1 + (_rand(n, generator, x.device) * 2 - 1) * a).to(x.dtype).view(-1, 1, 1, 1)

    if brightness:
        x = (x * factor(brightness)).clamp_(0, 1)
    if contrast:
        m = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - m) * factor(contrast) + m).clamp_(0, 1)
    if saturation and x.shape[1] == 3:
        g = _gray(x)
        x = ((x - g) * factor(saturation) + g).clamp_(0, 1)
    return x


def pad(x: torch.Tensor, amount: int) -> torch.Tensor:
    """Zero-pad every side by ``amount`` pixels (RandomCrop's ``padding``: black borders on uint8 images)."""
    if amount <= 0:
        return x
    return torch.nn.functional.pad(x, (amount, amount, amount, amount))


def random_erasing(x: torch.Tensor, p: float = 0.5, scale: Sequence[float] = (0.02, 0.33),
                   ratio: Sequence[float] = (0.3, 3.3), value: float = 0.0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """torchvision's ``RandomErasing`` for a whole batch, in place: with probability ``p`` each image gets one
    rectangle of ``scale`` x its area and aspect ``ratio`` (log-uniform) set to ``value`` (0 = the mean colour
    once normalized). One mask pass over the batch, whatever its size or device."""
    n, _, h, w = x.shape
    if p <= 0 or n == 0:
        return x
    dev = x.device
    area = h * w * (scale[0] + _rand(n, generator, dev) * (scale[1] - scale[0]))
    lo, hi = torch.log(torch.tensor(ratio[0])), torch.log(torch.tensor(ratio[1]))
    aspect = torch.exp(lo + _rand(n, generator, dev) * (hi - lo))
    eh = (area * aspect).sqrt().round().clamp(1, h).long()
    ew = (area / aspect).sqrt().round().clamp(1, w).long()
    top = (_rand(n, generator, dev) * (h - eh + 1)).long()
    left = (_rand(n, generator, dev) * (w - ew + 1)).long()
    on = _rand(n, generator, dev) < p
    rows = torch.arange(h, device=dev)[None, :]
    cols = torch.arange(w, device=dev)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])        # n,h
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])      # n,w
    mask = (in_rows[:, :, None] & in_cols[:, None, :] & on[:, None, None])[:, None]  # n,1,h,w
    return x.masked_fill_(mask, value)
