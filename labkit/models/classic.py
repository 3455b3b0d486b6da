"""The notes' first networks: MLP, LeNet (avg pooling + tanh), LeNetV2 (max pooling + ReLU), LeNetColor.

Every model takes ``in_channels``, ``image_size`` and ``num_classes`` (filled in from the data config)
and derives its fully connected sizes from them, so the notes' layer widths hold at the notes' input
sizes and the same class also runs on other inputs.
"""
from __future__ import annotations

from torch import nn

from labkit.models.shape import feature_shape


class MLP(nn.Module):
    """One-hidden-layer perceptron (note 003): flatten -> Linear(C*H*W, hidden) -> tanh -> Linear(hidden, classes).

    Input: ``(N, C, H, W)``; 784-512-10 on MNIST.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, hidden_units: int = 512):
        super().__init__()
        self.hidden_layer = nn.Linear(in_channels * image_size * image_size, hidden_units)
        self.activation = nn.Tanh()
        self.output_layer = nn.Linear(hidden_units, num_classes)

    def forward(self, x):
        return self.output_layer(self.activation(self.hidden_layer(x.flatten(1))))


class _LeNetBase(nn.Module):
    pool: type[nn.Module] = nn.AvgPool2d
    act: type[nn.Module] = nn.Tanh
    name = "lenet"

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10):
        super().__init__()
        # conv -> pool -> activation, twice, as in note 001 (C1, S2, C3, S4)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), self.pool(2), self.act(),
            nn.Conv2d(6, 16, 5), self.pool(2), self.act(),
        )
        flat = feature_shape(self.features, in_channels, image_size, self.name).numel()
        self.classifier = nn.Sequential(  # F5, F6, F7
            nn.Linear(flat, 120), self.act(),
            nn.Linear(120, 84), self.act(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class LeNet(_LeNetBase):
    """LeNet-5 as in note 001: average pooling and tanh. Input ``(N, C, H, W)``, at least 16x16.

    44,426 parameters on 1x28x28 with 10 classes.
    """


class LeNetV2(_LeNetBase):
    """LeNet with max pooling and ReLU (note 001). Input ``(N, C, H, W)``, at least 16x16."""

    pool = nn.MaxPool2d
    act = nn.ReLU
    name = "lenet_v2"


class LeNetColor(nn.Module):
    """Wider LeNet for colour images (note 001): 18 and 28 feature maps, FC 360-252. Input ``(N, 3, 32, 32)``."""

    def __init__(self, in_channels: int = 3, image_size: int = 32, num_classes: int = 100):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 18, 5), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(18, 28, 5), nn.MaxPool2d(2), nn.ReLU(),
        )
        flat = feature_shape(self.features, in_channels, image_size, "lenet_color").numel()
        self.classifier = nn.Sequential(
            nn.Linear(flat, 360), nn.ReLU(),
            nn.Linear(360, 252), nn.ReLU(),
            nn.Linear(252, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))
