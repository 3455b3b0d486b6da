"""Embedding networks for metric learning (notes 000 and 002).

* :class:`EmbeddingNet`: the notes' LeNet-like embedding network (128-d codes on MNIST, 350,016 parameters).
* :class:`EmbeddingClassifier`: EmbeddingNet plus a linear head, for fine-tuning a siamese/triplet network as a
  classifier (the notes' exercises); its ``convnet.*``/``fc.*`` names are EmbeddingNet's, so
  ``model.init_from=<siamese run>`` loads the embedding weights by name.
* :class:`BackboneEmbedding`: any torchvision network with its classification head removed
  (mobilenet_v2 -> 1280-d, resnet18 -> 512-d, ...), as note 002 does for EgoCart.
* :class:`RawPixels`: no parameters, the image downsampled and flattened (note 002's RGB baseline).

Models only map images to vectors; losses and sampling live in the tasks and data modules.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from labkit.core.errors import ConfigError
from labkit.core.images import shorter_side_size
from labkit.models.heads import remove_head
from labkit.models.shape import feature_shape


class EmbeddingNet(nn.Module):
    """Note 002's ``EmbeddingNet``: LeNet-like features without the 10-unit output layer.

    conv(C->32, 5) -> ReLU -> maxpool 2 -> BatchNorm2d(32) -> conv(32->64, 5) -> ReLU -> maxpool 2 ->
    flatten -> BatchNorm1d(F) -> Linear(F, 256) -> ReLU -> BatchNorm1d(256) -> Linear(256, embedding_size).

    Input ``(N, C, S, S)`` with ``S = image_size`` (at least 16); output ``(N, embedding_size)``.
    F is derived from the input shape: 64 * 4 * 4 = 1024 at 28x28. The submodule names (``convnet``, ``fc``)
    are the notes' own, so a state dict saved by the notes' code loads unchanged.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, embedding_size: int = 128):
        super().__init__()
        if isinstance(embedding_size, bool) or not isinstance(embedding_size, int) or embedding_size <= 0:
            raise ConfigError(f"model.embedding_size={embedding_size!r} is invalid: use a positive integer")
        self.convnet = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5), nn.ReLU(), nn.MaxPool2d(2, stride=2), nn.BatchNorm2d(32),
            nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2, stride=2),
        )
        flat = feature_shape(self.convnet, in_channels, image_size, type(self).__name__).numel()
        self.fc = nn.Sequential(
            nn.BatchNorm1d(flat), nn.Linear(flat, 256), nn.ReLU(),
            nn.BatchNorm1d(256), nn.Linear(256, embedding_size),
        )
        self.embedding_size = embedding_size

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convnet(x).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)


class EmbeddingClassifier(EmbeddingNet):
    """EmbeddingNet followed by ``classifier = Linear(embedding_size, num_classes)``: input ``(N, C, S, S)``,
    output ``(N, num_classes)`` logits.

    Fine-tune a metric-learning run as a classifier (notes 000/002, exercises):
    ``model=embedding_classifier model.init_from=<siamese or triplet run>`` -- the checkpoint's
    ``convnet.*`` and ``fc.*`` weights match these names; ``classifier.*`` starts fresh.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, embedding_size: int = 128,
                 num_classes: int = 10):
        super().__init__(in_channels, image_size, embedding_size)
        self.classifier = nn.Linear(embedding_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


# ----- torchvision backbones ---------------------------------------------------------------------
class BackboneEmbedding(nn.Module):
    """A torchvision network of :mod:`labkit.models.zoo` without its classifier: input ``(N, C, H, W)``
    (ImageNet-normalized), output ``(N, D)``.

    ``arch`` is a key of :data:`labkit.models.zoo.FAMILIES` (``name`` is accepted for it, as configs saved
    before labkit called it ``arch`` spell it). D is the backbone's feature size (mobilenet_v2: 1280,
    resnet18: 512, alexnet/vgg16: 4096): :func:`labkit.models.heads.remove_head` replaces the head by
    ``Identity``, and so a classifier block left with only dropout (mobilenet_v2's ``classifier``, as note 002
    does). ``embedding_size`` adds a ``Linear(D, embedding_size)`` projection
    (null: none, as in note 002). ``pretrained`` loads ImageNet weights from torch's cache (see
    :func:`labkit.models.zoo.build`; missing offline -> :class:`WeightsNotFoundError`); note 002 starts from a
    random init.
    """

    def __init__(self, arch: str = "mobilenet_v2", pretrained: bool | str = False, in_channels: int = 3,
                 image_size: int = 224, embedding_size: int | None = None, name: str | None = None):
        super().__init__()
        from labkit.models import zoo

        arch = name or arch  # ``name``: this option's spelling in configs saved before ``arch``
        net = zoo.build(arch, num_classes=1, in_channels=in_channels, image_size=image_size, pretrained=pretrained)
        remove_head(net)
        for attr in ("labkit_arch", "num_classes"):
            if hasattr(net, attr):
                delattr(net, attr)
        self.backbone = net
        out = feature_shape(net, in_channels, image_size, arch)  # (D,) or a (D, h, w) feature map
        self.pool = len(out) > 1
        features = out[0]
        if embedding_size is not None and (isinstance(embedding_size, bool) or not isinstance(embedding_size, int)
                                           or embedding_size <= 0):
            raise ConfigError(f"model.embedding_size={embedding_size!r} is invalid: use a positive integer or null")
        self.projection = nn.Linear(features, embedding_size) if embedding_size else nn.Identity()
        self.embedding_size = embedding_size or features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        if self.pool:
            f = f.flatten(2).mean(2)
        return self.projection(f)


class RawPixels(nn.Module):
    """The image itself as its embedding: resized so that its shorter side is ``size`` (bilinear with
    antialiasing, like torchvision's ``Resize(size)``), then flattened. No parameters.

    Input ``(N, C, H, W)``; output ``(N, C * h * w)``: 3 x 32 x 56 = 5376 values for EgoCart's 16:9 frames,
    note 002's RGB nearest-neighbour baseline.
    """

    def __init__(self, size: int = 32, in_channels: int = 3, image_size: int | None = None):
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ConfigError(f"model.size={size!r} is invalid: use a positive integer")
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = shorter_side_size(h, w, self.size)
        if out != (h, w):
            x = F.interpolate(x.float(), size=out, mode="bilinear", antialias=True, align_corners=False)
        return x.flatten(1)
