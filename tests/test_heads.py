"""The head protocol (labkit.models.heads) shared by fine-tuning, the zoo, BackboneEmbedding and the
retrieval report; the zoo's one builder; the shared image conventions (labkit.core.images)."""
from __future__ import annotations

import pytest
import torch
import torchvision.transforms as T
from omegaconf import OmegaConf
from test_zoo import CONF, FAMILIES
from torch import nn

from labkit.callbacks import UnfreezeBackbone
from labkit.core.images import shorter_side_size
from labkit.data.files import resize_shorter_side
from labkit.models import MLP, EmbeddingClassifier, EmbeddingNet, LeNet, MiniAlexNetV4, RawPixels, zoo
from labkit.models.autoencoders import ConvAutoencoder, EncoderClassifier, MLPAutoencoder
from labkit.models.build import build_model
from labkit.models.embedding import BackboneEmbedding
from labkit.models.heads import (
    HeadNotFoundError,
    Penultimate,
    find_head,
    head_name,
    head_parameter_names,
    remove_head,
    reset_head,
)


class TimmStyle(nn.Module):
    """A model following timm's protocol: it names its own classifier."""

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.stem = nn.Linear(6, 5)
        self.fc_norm = nn.LayerNorm(5)
        self.last = nn.Linear(5, num_classes)
        self.extra = nn.Linear(5, 5)  # defined last: the "last nn.Linear" convention would pick it

    def get_classifier(self) -> nn.Module:
        return self.last

    def reset_classifier(self, num_classes: int) -> None:
        self.last = nn.Linear(5, num_classes)

    def forward(self, x):
        return self.last(self.fc_norm(self.stem(x)))


class ConvOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return self.conv(x)


class Compiled(nn.Module):
    """Stands in for torch.compile's wrapper: the network is ``_orig_mod``."""

    def __init__(self, net):
        super().__init__()
        self._orig_mod = net

    def forward(self, x):
        return self._orig_mod(x)


def _heads_of_labkit_models():
    ae = MLPAutoencoder(1, 28, hidden_units=(32, 8))
    return [
        (MLP(), "output_layer"),
        (LeNet(), "classifier.4"),
        (MiniAlexNetV4(3, 28, 10), "classifier.9"),
        (EmbeddingClassifier(), "classifier"),
        (EmbeddingNet(), "fc.4"),
        (EncoderClassifier(ae, num_classes=3, hidden_units=7), "head"),
        (ae, "decoder.4"),
        (zoo.squeezenet1_0(num_classes=3, image_size=32), "classifier.1"),
        (TimmStyle(), "last"),
    ]


@pytest.mark.parametrize("model,expected", _heads_of_labkit_models(), ids=lambda v: v if isinstance(v, str) else "")
def test_one_head_for_fine_tuning_and_penultimate_features(model, expected):
    name, layer = find_head(model)
    assert name == expected == head_name(model) and model.get_submodule(name) is layer
    assert head_parameter_names(model) == [f"{name}.{n}" for n, _ in layer.named_parameters()]
    assert find_head(Compiled(model)) == (name, layer)  # torch.compile's wrapper is looked through
    pen = Penultimate(model)  # the retrieval report's features are the input of that same layer
    assert pen.layer is layer and pen.layer_name == name


def test_declared_head_wins_over_the_conventions():
    model = TimmStyle()
    assert find_head(model)[0] == "last"
    reset_head(model, 9)  # timm's reset_classifier
    assert model.last.out_features == 9
    assert Penultimate(model)(torch.zeros(2, 6)).shape == (2, 5)
    clf = EncoderClassifier(MLPAutoencoder(1, 28, hidden_units=(32, 8)), num_classes=3, hidden_units=7)
    assert find_head(clf)[0] == "head"  # labkit_head = "head", not the last Linear head.3
    lenet = LeNet()
    lenet.labkit_head = "classifier.2"
    assert find_head(lenet)[0] == "classifier.2"
    assert Penultimate(lenet)(torch.zeros(3, 1, 28, 28)).shape == (3, 120)


def test_a_model_without_a_head():
    net = ConvOnly()
    assert head_name(net) is None
    with pytest.raises(HeadNotFoundError, match="ConvOnly.*labkit_head"):
        find_head(net)
    assert Penultimate(net)(torch.zeros(2, 1, 5, 5)).shape == (2, 2 * 3 * 3)  # its own output, flattened
    cb = UnfreezeBackbone()
    holder = nn.Module()
    holder.model = net
    with pytest.raises(HeadNotFoundError, match=r"^task.freeze=backbone: .*task.freeze=null"):
        cb.freeze_before_training(holder)


@pytest.mark.slow
def test_remove_head_keeps_the_features():
    net = zoo.mobilenet_v2(num_classes=5, image_size=32)
    remove_head(net)
    assert isinstance(net.classifier, nn.Identity) and not hasattr(net, "labkit_head")  # dropout-only block gone
    assert net.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 1280)
    net = zoo.resnet18(num_classes=5, image_size=32)
    remove_head(net)
    assert isinstance(net.fc, nn.Identity) and net.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 512)


def test_zoo_is_one_builder_named_by_arch():
    for arch in FAMILIES:
        node = OmegaConf.load(CONF / "model" / f"{arch}.yaml")
        assert node.arch == arch and getattr(zoo, arch).__name__ == arch
    torch.manual_seed(0)
    a = zoo.build("squeezenet1_0", num_classes=3, image_size=32)
    torch.manual_seed(0)
    b = zoo.squeezenet1_0(num_classes=3, image_size=32)
    torch.manual_seed(0)
    # a config saved before arch: existed (checkpoints hold it) builds the same network
    c = build_model({"_target_": "labkit.models.zoo.squeezenet1_0", "num_classes": 3, "image_size": 32})
    for other in (b, c):
        assert all(torch.equal(v, other.state_dict()[k]) for k, v in a.state_dict().items())
    assert a.labkit_arch == c.labkit_arch == "squeezenet1_0"


def test_backbone_embedding_arch_and_its_old_name():
    torch.manual_seed(0)
    new = BackboneEmbedding(arch="resnet18", image_size=32)
    torch.manual_seed(0)
    old = BackboneEmbedding(name="resnet18", image_size=32)  # the option's spelling in saved configs
    assert new.embedding_size == old.embedding_size == 512
    assert list(new.state_dict()) == list(old.state_dict())
    assert all(torch.equal(v, old.state_dict()[k]) for k, v in new.state_dict().items())
    assert head_name(new.backbone) != "fc"  # the removed head is no head any more


@pytest.mark.parametrize("h,w", [(24, 40), (40, 24), (17, 17), (9, 31), (480, 640)])
def test_one_shorter_side_rule(h, w):
    size = 16
    expected = tuple(T.Resize(size)(torch.zeros(1, h, w)).shape[-2:])  # torchvision's own rule
    assert shorter_side_size(h, w, size) == expected
    from PIL import Image

    assert resize_shorter_side(Image.new("RGB", (w, h)), size).size == (expected[1], expected[0])
    assert RawPixels(size=size)(torch.rand(2, 3, h, w)).shape == (2, 3 * expected[0] * expected[1])


def test_conv_autoencoder_has_no_head():
    assert head_name(ConvAutoencoder()) is None
