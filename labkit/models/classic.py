"""The notes' first networks: MLP, LeNet (avg pooling + tanh), LeNetV2 (max pooling + ReLU), LeNetColor, and note
004's LeNet variant for Fashion-MNIST (LeNetAlt).

Every model takes ``in_channels``, ``image_size`` and ``num_classes`` (filled in from the data config)
and derives its fully connected sizes from them, so the notes' layer widths hold at the notes' input
sizes and the same class also runs on other inputs.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from labkit.core.errors import ConfigError
from labkit.models.shape import feature_shape

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
INITS = ("torch", "glorot_uniform")


def _activation(name: str, model: str, key: str = "activation") -> type[nn.Module]:
    if name not in ACTIVATIONS:
        raise ConfigError(f"model.{key}={name!r} is invalid for {model}: choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def initialize(model: nn.Module, init: str, name: str) -> nn.Module:
    """``torch``: PyTorch's default initialization (kept as built); ``glorot_uniform``: Keras' default, Glorot-uniform
    weights and zero biases for every Linear and Conv2d layer (note 004's models are Keras models)."""
    if init not in INITS:
        raise ConfigError(f"model.init={init!r} is invalid for {name}: choose one of {', '.join(INITS)}")
    if init == "glorot_uniform":
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    return model


class MLP(nn.Module):
    """Multilayer perceptron: flatten -> [Linear -> activation] per hidden layer -> Linear(last hidden, classes).

    Input: ``(N, C, H, W)``. Defaults: one hidden layer of 512 with tanh, 784-512-10 on MNIST (note 003);
    ``hidden_units=[300, 100] activation=relu``: note 004's 784-300-100-10 on Fashion-MNIST. The first hidden layer is
    ``hidden_layer`` (its name before several were possible: older checkpoints still load), the others
    ``more_hidden.<i>``, the last ``output_layer``.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                 hidden_units: Sequence[int] | int = 512, activation: str = "tanh", init: str = "torch"):
        super().__init__()
        widths = [hidden_units] if isinstance(hidden_units, int) else list(hidden_units)
        if not widths or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in widths):
            raise ConfigError(f"model.hidden_units={hidden_units!r} is invalid for mlp: use a positive integer or a "
                              "list of them, e.g. [300, 100]")
        act = _activation(activation, "mlp")
        self.hidden_layer = nn.Linear(in_channels * image_size * image_size, widths[0])
        self.activation = act()
        self.more_hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.output_layer = nn.Linear(widths[-1], num_classes)
        initialize(self, init, "mlp")

    def forward(self, x):
        x = self.activation(self.hidden_layer(x.flatten(1)))
        for layer in self.more_hidden:
            x = self.activation(layer(x))
        return self.output_layer(x)


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


class LeNetAlt(nn.Module):
    """Note 004's LeNet variant (Keras' ``lenet_alt`` on Fashion-MNIST): conv 6@5x5 with 'same' padding + ReLU,
    average pooling 2, conv 16@5x5 + ReLU, average pooling 2, dense 120 and 84 with ``head_activation`` (the notes'
    sigmoid; ``relu``: the all-ReLU network the notes say reaches 91%), then ``num_classes`` outputs (the softmax is
    in the loss). Input ``(N, C, H, W)``, at least 12x12; 61,706 parameters on 1x28x28 with 10 classes.
    ``init=glorot_uniform``: Keras' initialization (Glorot-uniform weights, zero biases).
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                 head_activation: str = "sigmoid", init: str = "torch"):
        super().__init__()
        head = _activation(head_activation, "lenet_alt", "head_activation")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2, 2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.AvgPool2d(2, 2),
        )
        flat = feature_shape(self.features, in_channels, image_size, "lenet_alt").numel()
        self.classifier = nn.Sequential(
            nn.Linear(flat, 120), head(),
            nn.Linear(120, 84), head(),
            nn.Linear(84, num_classes),
        )
        initialize(self, init, "lenet_alt")

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))
