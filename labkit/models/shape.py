"""Shape helpers shared by the models: derive fully connected sizes from the input shape."""
from __future__ import annotations

import torch
from torch import nn

from labkit.core.errors import IncompatibleError


def _probe(features: nn.Module, in_channels: int, size: int) -> torch.Size | None:
    try:
        with torch.no_grad():
            return features(torch.zeros(1, in_channels, size, size)).shape
    except RuntimeError:
        return None


def feature_shape(features: nn.Module, in_channels: int, image_size: int, model: str) -> torch.Size:
    """Output shape (without batch) of ``features`` on a ``in_channels x image_size x image_size`` input.

    Raises :class:`IncompatibleError` naming the model, the input shape and the smallest size that
    works when the input is too small for the network's convolutions and pooling.
    """
    was_training = features.training
    features.eval()  # BatchNorm would refuse a batch of one in training mode
    try:
        out = _probe(features, in_channels, image_size)
        if out is not None and out.numel() > 0:
            return out[1:]
        smallest = next(
            (s for s in range(image_size + 1, 1025) if (o := _probe(features, in_channels, s)) is not None
             and o.numel() > 0),
            None,
        )
    finally:
        features.train(was_training)
    need = f"at least {smallest}x{smallest} pixels" if smallest else "a larger input"
    raise IncompatibleError(
        f"model '{model}' cannot take input {in_channels}x{image_size}x{image_size}: its convolutions and "
        f"pooling need {need}. Use a data config with a larger data.image_size or a smaller model."
    )


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
