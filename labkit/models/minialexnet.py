"""MiniAlexNet V1-V4 from note 001.

V1: five convolutions (16-32-64-128-256) and FC 2048-1024. V2: dropout before FC6 and FC7.
V3: the V2 network trained on 28x28 crops (the architecture is V2's; the input size changes).
V4: V3 plus batch normalization before every layer except the first.
Input ``(N, C, H, W)``, at least 8x8; the FC6 width follows the input (4096 at 32x32, 2304 at 28x28).
"""
from __future__ import annotations

from torch import nn

from labkit.models.shape import feature_shape


def _features(in_channels: int, batch_norm: bool) -> nn.Sequential:
    def bn(c):
        return [nn.BatchNorm2d(c)] if batch_norm else []

    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(),
        *bn(16), nn.Conv2d(16, 32, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(),
        *bn(32), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        *bn(64), nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
        *bn(128), nn.Conv2d(128, 256, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),
    )


class MiniAlexNet(nn.Module):
    """MiniAlexNet; ``dropout`` and ``batch_norm`` switch on the V2 and V4 changes."""

    name = "minialexnet"

    def __init__(self, in_channels: int = 3, image_size: int = 32, num_classes: int = 100,
                 dropout: float = 0.0, batch_norm: bool = False):
        super().__init__()
        self.feature_extractor = _features(in_channels, batch_norm)
        flat = feature_shape(self.feature_extractor, in_channels, image_size, self.name).numel()

        def block(i, o):
            return ([nn.Dropout(dropout)] if dropout else []) + ([nn.BatchNorm1d(i)] if batch_norm else []) + [
                nn.Linear(i, o), nn.ReLU()]

        head = [nn.BatchNorm1d(1024)] if batch_norm else []
        self.classifier = nn.Sequential(*block(flat, 2048), *block(2048, 1024), *head, nn.Linear(1024, num_classes))

    def forward(self, x):
        return self.classifier(self.feature_extractor(x).flatten(1))


class MiniAlexNetV2(MiniAlexNet):
    """MiniAlexNet with dropout (p=0.5) before FC6 and FC7."""

    name = "minialexnet_v2"

    def __init__(self, in_channels: int = 3, image_size: int = 32, num_classes: int = 100, dropout: float = 0.5):
        super().__init__(in_channels, image_size, num_classes, dropout=dropout)


class MiniAlexNetV3(MiniAlexNetV2):
    """V2's network for 28x28 crops (the notes' augmentation); defaults to ``image_size=28``."""

    name = "minialexnet_v3"

    def __init__(self, in_channels: int = 3, image_size: int = 28, num_classes: int = 100, dropout: float = 0.5):
        super().__init__(in_channels, image_size, num_classes, dropout=dropout)


class MiniAlexNetV4(MiniAlexNet):
    """V3 plus batch normalization before every layer except the first."""

    name = "minialexnet_v4"

    def __init__(self, in_channels: int = 3, image_size: int = 28, num_classes: int = 100, dropout: float = 0.5):
        super().__init__(in_channels, image_size, num_classes, dropout=dropout, batch_norm=True)
