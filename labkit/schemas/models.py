"""Schemas of the networks (:mod:`labkit.models`): one per ``_target_`` of ``conf/model/``. The geometry fields
(``in_channels``, ``image_size``, ``num_classes``) come from the data config by interpolation in the YAMLs."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional

from labkit.core import checks
from labkit.schemas.base import MISSING, schema


def _dropout(a: Mapping[str, Any]) -> None:
    checks.in_range("model.dropout", a["dropout"], 0.0, 1.0, hi_open=True, hint="0 = no dropout")


@dataclass
class Geometry:
    """The input and output a network is built for."""

    in_channels: int = 1  # image channels (data.channels)
    image_size: int = 28  # side of the square input (data.image_size)
    num_classes: int = 10  # outputs of the head (data.num_classes)

    @staticmethod
    def check(a: Mapping[str, Any]) -> None:
        """in_channels, image_size and num_classes are positive integers (when given)."""
        for key in ("in_channels", "image_size", "num_classes"):
            if key in a:
                checks.positive_int(f"model.{key}", a[key], optional=True)


_ACTIVATIONS = ("tanh", "relu", "sigmoid", "gelu")
_INITS = ("torch", "glorot_uniform")


def _choice(key: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise checks.invalid(f"model.{key}", value, f"one of {', '.join(options)}")


@schema("labkit.models.MLP", "model")
class MLP(Geometry):
    """Multilayer perceptron: 784-512-10 with tanh by default (note 003); [300, 100] with relu is note 004's."""

    hidden_units: Any = 512  # units of the hidden layer, or a list of hidden layer sizes, e.g. [300, 100]
    activation: str = "tanh"  # activation of every hidden layer: tanh, relu, sigmoid or gelu
    init: str = "torch"  # weight initialization: torch (PyTorch's default) or glorot_uniform (Keras', zero biases)

    @staticmethod
    def check(a: Mapping[str, Any]) -> None:
        """hidden_units a positive integer or a non-empty list of them; activation and init among the choices."""
        units = a["hidden_units"]
        if isinstance(units, Sequence) and not isinstance(units, str):
            if not len(units):
                raise checks.invalid("model.hidden_units", list(units), "a positive integer or a non-empty list of "
                                     "them", "e.g. [300, 100]")
            for i, v in enumerate(units):
                checks.positive_int(f"model.hidden_units[{i}]", v)
        else:
            checks.positive_int("model.hidden_units", units)
        _choice("activation", a["activation"], _ACTIVATIONS)
        _choice("init", a["init"], _INITS)


@schema("labkit.models.LeNet", "model")
class LeNet(Geometry):
    """LeNet-5, average pooling + tanh (note 001)."""


@schema("labkit.models.LeNetV2", "model")
class LeNetV2(Geometry):
    """LeNet with max pooling + ReLU (note 001)."""


@schema("labkit.models.LeNetAlt", "model")
class LeNetAlt(Geometry):
    """Note 004's LeNet variant: conv 6@5x5 same + ReLU, avg pool, conv 16@5x5 + ReLU, avg pool, dense 120-84."""

    head_activation: str = "sigmoid"  # activation of the dense 120 and 84 layers (the notes' sigmoid; relu: all-ReLU)
    init: str = "torch"  # weight initialization: torch (PyTorch's default) or glorot_uniform (Keras', zero biases)

    @staticmethod
    def check(a: Mapping[str, Any]) -> None:
        """head_activation and init among the choices."""
        _choice("head_activation", a["head_activation"], _ACTIVATIONS)
        _choice("init", a["init"], _INITS)


@schema("labkit.models.LeNetColor", "model")
class LeNetColor(Geometry):
    """LeNet widened for colour images, 18/28 maps, FC 360-252 (note 001)."""

    in_channels: int = 3
    image_size: int = 32
    num_classes: int = 100


@schema("labkit.models.MiniAlexNet", "model")
class MiniAlexNet(Geometry):
    """Five convolutions 16-32-64-128-256, FC 2048-1024 (note 001)."""

    in_channels: int = 3
    image_size: int = 32
    num_classes: int = 100
    dropout: float = 0.0  # dropout before FC6 and FC7
    batch_norm: bool = False  # batch normalization after each convolution

    check = staticmethod(_dropout)


@schema("labkit.models.MiniAlexNetV2", "model")
class MiniAlexNetV2(Geometry):
    """MiniAlexNet + dropout before FC6 and FC7."""

    in_channels: int = 3
    image_size: int = 32
    num_classes: int = 100
    dropout: float = 0.5  # dropout before FC6 and FC7

    check = staticmethod(_dropout)


@schema("labkit.models.MiniAlexNetV3", "model")
class MiniAlexNetV3(MiniAlexNetV2):
    """V2 for 28x28 augmented crops."""

    image_size: int = 28


@schema("labkit.models.MiniAlexNetV4", "model")
class MiniAlexNetV4(MiniAlexNetV3):
    """V3 + batch normalization."""


@schema("labkit.models.autoencoders.MLPAutoencoder", "model")
class MLPAutoencoder:
    """784-256-128 fully connected autoencoder (note 003)."""

    in_channels: int = 1  # image channels (data.channels)
    image_size: int = 28  # side of the square input (data.image_size)
    hidden_units: Any = (256,)  # hidden layer sizes of the encoder (mirrored in the decoder): an int or a list
    code_size: int = 128  # size of the code

    @staticmethod
    def check(a: Mapping[str, Any]) -> None:
        """code_size a positive integer."""
        checks.positive_int("model.code_size", a["code_size"])


@schema("labkit.models.autoencoders.ConvAutoencoder", "model")
class ConvAutoencoder:
    """Convolutional autoencoder, code 4x7x7 for 28x28 input (note 003)."""

    in_channels: int = 1  # image channels (data.channels)
    image_size: int = 28  # side of the square input (data.image_size)
    channels: List[int] = (16, 8, 4)  # feature maps of the encoder's convolutions (the last one is the code's)
    kernel_size: int = 3  # convolution kernel size

    @staticmethod
    def check(a: Mapping[str, Any]) -> None:
        """kernel_size a positive integer."""
        checks.positive_int("model.kernel_size", a["kernel_size"])


@schema("labkit.models.autoencoders.EncoderClassifier", "model")
class EncoderClassifier:
    """A classifier on an autoencoder's encoder (pretrain, then classify)."""

    autoencoder: Any = MISSING  # the autoencoder's model config ({_target_: ...})
    num_classes: int = 10  # outputs of the head (data.num_classes)
    hidden_units: Optional[int] = None  # a hidden layer between the code and the head (null: none)
    dropout: float = 0.0  # dropout before the head

    check = staticmethod(_dropout)


@schema("labkit.models.embedding.EmbeddingNet", "model")
class EmbeddingNet:
    """The notes' LeNet-like embedding network for siamese/triplet learning (notes 000/002)."""

    in_channels: int = 1  # image channels (data.channels)
    image_size: int = 28  # side of the square input (data.image_size)
    embedding_size: int = 128  # size of the embedding

    @staticmethod
    def check(a: Mapping[str, Any]) -> None:
        """embedding_size a positive integer."""
        checks.positive_int("model.embedding_size", a["embedding_size"])


@schema("labkit.models.embedding.EmbeddingClassifier", "model")
class EmbeddingClassifier(EmbeddingNet):
    """An EmbeddingNet plus a linear head."""

    num_classes: int = 10  # outputs of the head (data.num_classes)


@schema("labkit.models.embedding.BackboneEmbedding", "model")
class BackboneEmbedding:
    """A torchvision backbone without its classifier, as an embedding network."""

    arch: str = "mobilenet_v2"  # the torchvision network
    pretrained: Any = False  # false, true (ImageNet weights) or a weights name
    in_channels: int = 3  # image channels (data.channels)
    image_size: int = 224  # side of the input (data.image_size)
    embedding_size: Optional[int] = None  # a linear projection to this size (null: the backbone's features)
    name: Optional[str] = None  # (kept for old configs)


@schema("labkit.models.embedding.RawPixels", "model")
class RawPixels:
    """No learning: the image downsampled and flattened (EgoCart's RGB baseline)."""

    size: int = 32  # side the image is downsampled to
    in_channels: int = 3  # image channels (data.channels)
    image_size: Optional[int] = None  # side of the input (data.image_size)

    @staticmethod
    def check(a: Mapping[str, Any]) -> None:
        """size a positive integer."""
        checks.positive_int("model.size", a["size"])


@dataclass
class Zoo:
    """A torchvision network with its head replaced for num_classes (note 000)."""

    num_classes: int = 1000  # outputs of the new head (data.num_classes)
    in_channels: int = 3  # image channels: the first convolution is rebuilt when not 3
    image_size: int = 224  # side of the input (data.image_size)
    pretrained: Any = False  # false, true (the ImageNet weights from $TORCH_HOME) or a weights name
    arch: str = MISSING  # the torchvision network (the target is named after it)


ZOO = ("alexnet", "vgg16", "googlenet", "resnet18", "resnet34", "resnet50", "squeezenet1_0", "mobilenet_v2")
for _arch in ZOO:
    globals()[_arch] = schema(f"labkit.models.zoo.{_arch}", "model")(
        type(_arch, (Zoo,), {"__annotations__": {"arch": "str"}, "arch": _arch, "__module__": __name__,
                             "__doc__": f"torchvision {_arch} with its head replaced for num_classes (note 000)."}))
