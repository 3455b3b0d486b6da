"""Autoencoders of note 003 (fully connected and convolutional) and a classifier built on their encoder.

Every autoencoder exposes ``encode(x) -> code``, ``decode(code) -> reconstruction`` and
``forward(x) -> reconstruction`` with the input's shape. Its weights live in two submodules,
``encoder`` and ``decoder``, so that :class:`EncoderClassifier` (whose ``encoder`` submodule is
built by the same class) receives a pretrained encoder by plain name + shape matching of state
dicts: ``model.init_from=<autoencoder run>`` loads ``encoder.*`` and ignores ``decoder.*``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from labkit.core.errors import ConfigError, IncompatibleError


def _widths(name: str, values: Sequence[int] | int, model: str) -> list[int]:
    values = [values] if isinstance(values, int) else list(values)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values):
        raise ConfigError(f"model.{name}={values!r} is invalid for {model}: use a list of positive integers")
    return values


class _Autoencoder(nn.Module):
    """``encoder`` and ``decoder`` submodules; ``forward`` reconstructs the input."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class MLPAutoencoder(_Autoencoder):
    """Fully connected autoencoder (note 003): 784-256-128 encoder, 128-256-784 decoder on MNIST.

    Input ``(N, C, H, W)``, flattened inside. Encoder: ``Linear -> ReLU`` for every layer, the code
    included (the notes put a ReLU after the last encoder layer because it is not the network's last
    layer). Decoder: the mirror, ``Linear -> ReLU`` except the output layer, which is linear (the
    targets are normalized pixels, which can be negative). Code: ``(N, code_size)``.

    468,368 parameters at the notes' sizes (encoder 233,856, decoder 234,512).
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, hidden_units: Sequence[int] | int = (256,),
                 code_size: int = 128):
        super().__init__()
        hidden = _widths("hidden_units", hidden_units, "mlp_autoencoder")
        code_size = _widths("code_size", code_size, "mlp_autoencoder")[0]
        self.input_shape = (in_channels, image_size, image_size)
        n_in = in_channels * image_size * image_size
        sizes = [n_in, *hidden, code_size]
        enc: list[nn.Module] = [nn.Flatten(1)]
        for a, b in zip(sizes[:-1], sizes[1:]):
            enc += [nn.Linear(a, b), nn.ReLU()]
        self.encoder = nn.Sequential(*enc)
        back = sizes[::-1]
        dec: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(back[:-1], back[1:])):
            dec.append(nn.Linear(a, b))
            if i < len(back) - 2:
                dec.append(nn.ReLU())
        dec.append(nn.Unflatten(1, self.input_shape))
        self.decoder = nn.Sequential(*dec)


class ConvAutoencoder(_Autoencoder):
    """Convolutional autoencoder (note 003). Input ``(N, C, H, W)`` with H and W divisible by 2^(len(channels)-1).

    Encoder, with ``channels = [16, 8, 4]``: ``Conv3x3(C,16) -> AvgPool2d(2) -> ReLU -> Conv3x3(16,8) ->
    AvgPool2d(2) -> ReLU -> Conv3x3(8,4) -> ReLU`` (padding 1, so only the pooling shrinks the maps; the
    notes pool *before* the activation). Decoder, its mirror with ``Upsample(scale_factor=2)`` (nearest)
    in place of the pooling: ``Conv3x3(4,8) -> Upsample -> ReLU -> Conv3x3(8,16) -> Upsample -> ReLU ->
    Conv3x3(16,C)`` (linear output). Code: ``(N, 4, 7, 7)`` for 28x28 input.

    3,221 parameters at the notes' sizes (encoder 1,612, decoder 1,609).
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, channels: Sequence[int] = (16, 8, 4),
                 kernel_size: int = 3):
        super().__init__()
        widths = _widths("channels", channels, "conv_autoencoder")
        if kernel_size % 2 != 1:
            raise ConfigError(f"model.kernel_size={kernel_size} is invalid: use an odd size so that padding "
                              "keeps the feature maps' size")
        factor = 2 ** (len(widths) - 1)
        if image_size % factor:
            raise IncompatibleError(
                f"model 'conv_autoencoder' with {len(widths) - 1} pooling layers needs an image size divisible by "
                f"{factor} to reconstruct its input exactly, but data.image_size={image_size}: choose "
                f"data.image_size={image_size - image_size % factor} or fewer model.channels")
        pad = kernel_size // 2
        self.input_shape = (in_channels, image_size, image_size)
        enc: list[nn.Module] = []
        for i, (a, b) in enumerate(zip([in_channels, *widths[:-1]], widths)):
            enc.append(nn.Conv2d(a, b, kernel_size, padding=pad))
            if i < len(widths) - 1:
                enc.append(nn.AvgPool2d(2))
            enc.append(nn.ReLU())
        self.encoder = nn.Sequential(*enc)
        back = [*widths[::-1], in_channels]
        dec: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(back[:-1], back[1:])):
            dec.append(nn.Conv2d(a, b, kernel_size, padding=pad))
            if i < len(back) - 2:
                dec += [nn.Upsample(scale_factor=2), nn.ReLU()]
        self.decoder = nn.Sequential(*dec)
        self.code_shape = (widths[-1], image_size // factor, image_size // factor)


class EncoderClassifier(nn.Module):
    """A classifier on an autoencoder's encoder: ``encoder -> flatten -> head``. Input: the autoencoder's.

    ``autoencoder`` is the autoencoder's model config (``_target_`` plus arguments, as in
    ``conf/model/conv_autoencoder.yaml``) or an autoencoder module; only its ``encoder`` is kept. The
    head is ``Linear(code, num_classes)``, or ``Linear -> ReLU -> Dropout -> Linear`` with ``hidden_units``.

    Pretraining: the top-level ``init_from`` key of the model config (handled by
    :func:`labkit.models.build.build_model`) copies every weight whose name and shape match; the
    encoder is named ``encoder`` as in the autoencoders, so ``encoder.*`` of an autoencoder run is
    loaded, its ``decoder.*`` has no counterpart and the head stays randomly initialized. The
    ``autoencoder`` config must describe the pretrained network (same class and widths).
    ``task.freeze=backbone`` trains only ``head`` (named by :attr:`labkit_head`), keeping the encoder fixed.
    """

    labkit_head = "head"

    def __init__(self, autoencoder: Mapping[str, Any] | nn.Module, num_classes: int = 10,
                 hidden_units: int | None = None, dropout: float = 0.0):
        super().__init__()
        if not isinstance(autoencoder, nn.Module):
            from labkit.models.build import build_model

            if not isinstance(autoencoder, Mapping) or "_target_" not in autoencoder:
                raise ConfigError("model.autoencoder must be an autoencoder model config with a _target_, "
                                  "e.g. the contents of conf/model/conv_autoencoder.yaml")
            autoencoder = build_model(dict(autoencoder))
        encoder = getattr(autoencoder, "encoder", None)
        shape = getattr(autoencoder, "input_shape", None)
        if not isinstance(encoder, nn.Module) or shape is None:
            raise IncompatibleError(f"model.autoencoder ({type(autoencoder).__name__}) has no 'encoder' submodule "
                                    "and 'input_shape': use labkit's MLPAutoencoder or ConvAutoencoder")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout={dropout} is invalid: it is a probability in [0, 1)")
        self.encoder = encoder
        self.input_shape = tuple(shape)
        was = encoder.training
        encoder.eval()
        with torch.no_grad():
            code_dim = encoder(torch.zeros(1, *self.input_shape)).flatten(1).shape[1]
        encoder.train(was)
        if hidden_units:
            self.head = nn.Sequential(nn.Linear(code_dim, hidden_units), nn.ReLU(), nn.Dropout(dropout),
                                      nn.Linear(hidden_units, num_classes))
        else:
            self.head = nn.Linear(code_dim, num_classes)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).flatten(1))
