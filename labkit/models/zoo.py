"""torchvision ImageNet networks adapted to a new number of classes, as in note 000.

Each builder returns the plain torchvision ``nn.Module`` (its state_dict keys are torchvision's, so
torchvision weight files and labkit checkpoints of these models are interchangeable) with:

* the 1000-class head replaced by a freshly initialized one for ``num_classes`` -- AlexNet/VGG16
  ``classifier[6]``, GoogLeNet/ResNet ``fc``, SqueezeNet ``classifier[1]`` (a 1x1 convolution),
  MobileNetV2 ``classifier[1]``; every other layer is exactly what torchvision built (random init,
  or the ImageNet weights with ``pretrained``);
* the first convolution rebuilt for ``in_channels`` when that is not 3 (from pretrained weights: the
  RGB filters averaged and spread over the new channels, so a grey image replicated to RGB gives
  the same response);
* ``model.labkit_head``: the dotted name of the head module, the head protocol of :mod:`labkit.models.heads`
  (``task.freeze=backbone`` keeps it trainable).

Inputs are ``(N, C, H, W)`` images normalized like ImageNet (mean 0.485/0.456/0.406, std
0.229/0.224/0.225; ``conf/data/caltech101.yaml`` does this), 224x224 in the notes.

Pretrained weights come from torchvision's cache ``$TORCH_HOME/hub/checkpoints`` (``torch.hub.get_dir()``);
offline, a missing file raises :class:`~labkit.core.errors.WeightsNotFoundError` saying which file to put where.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from torch import nn

from labkit.core.errors import ConfigError, IncompatibleError, WeightsNotFoundError
from labkit.models.heads import head_name, head_parameter_names, replace_module, reset_head  # noqa: F401


@dataclass(frozen=True)
class Family:
    builder: Callable[..., nn.Module]
    weights: type  # the torchvision WeightsEnum
    head: str  # dotted module name of the classification layer
    min_size: int  # smallest square input the network runs on
    kwargs: tuple = ()  # extra constructor arguments for random init

    def build_kwargs(self, pretrained: bool) -> dict[str, Any]:
        return {} if pretrained else dict(self.kwargs)


FAMILIES: dict[str, Family] = {
    "alexnet": Family(tvm.alexnet, tvm.AlexNet_Weights, "classifier.6", 63),
    "vgg16": Family(tvm.vgg16, tvm.VGG16_Weights, "classifier.6", 32),
    # aux_logits=False: forward returns a tensor, not GoogLeNetOutputs; init_weights=True silences
    # torchvision's warning and keeps its truncated-normal initialization
    "googlenet": Family(tvm.googlenet, tvm.GoogLeNet_Weights, "fc", 15,
                        (("aux_logits", False), ("init_weights", True))),
    "resnet18": Family(tvm.resnet18, tvm.ResNet18_Weights, "fc", 1),
    "resnet34": Family(tvm.resnet34, tvm.ResNet34_Weights, "fc", 1),
    "resnet50": Family(tvm.resnet50, tvm.ResNet50_Weights, "fc", 1),
    "squeezenet1_0": Family(tvm.squeezenet1_0, tvm.SqueezeNet1_0_Weights, "classifier.1", 21),
    "mobilenet_v2": Family(tvm.mobilenet_v2, tvm.MobileNet_V2_Weights, "classifier.1", 1),
}


# ----- weights ------------------------------------------------------------------------------------
def resolve_weights(arch: str, pretrained: bool | str):
    """The weights enum member for ``pretrained``: False/None -> None, True -> the notes' IMAGENET1K_V1,
    a string -> that member (e.g. ``IMAGENET1K_V2`` for resnet50)."""
    fam = FAMILIES[arch]
    if pretrained is None or pretrained is False:
        return None
    members = [m.name for m in fam.weights]
    if pretrained is True:
        return fam.weights["IMAGENET1K_V1"]
    if isinstance(pretrained, str):
        name = pretrained.split(".")[-1]
        if name in members:
            return fam.weights[name]
    raise ConfigError(f"model.pretrained={pretrained!r} is invalid for {arch}: use false, true (ImageNet, "
                      f"{fam.weights.__name__}.IMAGENET1K_V1) or one of {', '.join(members)}")


def weights_file(weights) -> str:
    """File name torchvision stores ``weights`` under (the basename of its URL)."""
    return os.path.basename(urlparse(weights.url).path)


def weights_cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _weights_error(arch: str, weights, cause: BaseException | None, unreadable: bool = False) -> WeightsNotFoundError:
    name = weights_file(weights)
    cache = weights_cache_dir()
    why = f" ({type(cause).__name__}: {str(cause).splitlines()[0][:200] if str(cause) else ''})" if cause else ""
    if unreadable:
        head = f"the cached ImageNet weights of {arch} at {cache / name} cannot be loaded{why}; delete the file"
    else:
        head = f"ImageNet weights of {arch} are not cached and could not be downloaded{why}"
    return WeightsNotFoundError(
        f"{head}. labkit needs the file {name} in {cache} (torch.hub.get_dir()/checkpoints; set TORCH_HOME "
        f"to use another cache folder). On a machine with internet access download {weights.url} and copy it "
        f"there under exactly that name (e.g. mkdir -p {cache} && cp {name} {cache}/), or run once with "
        f"internet access; or train from random init with model.pretrained=false.")


def _build_torchvision(arch: str, weights) -> nn.Module:
    fam = FAMILIES[arch]
    if weights is None:
        return fam.builder(weights=None, **fam.build_kwargs(False))
    cached = weights_cache_dir() / weights_file(weights)
    was_cached = cached.exists()
    if was_cached:  # torchvision unpickles cached weights with weights_only=False: refuse code before it runs
        from labkit.core.safe_load import refuse_unsafe_weights
        refuse_unsafe_weights(cached)
    try:
        return fam.builder(weights=weights, progress=False)
    except Exception as e:  # network errors come in many types (URLError, socket errors, HTTP errors)
        if not cached.exists():
            raise _weights_error(arch, weights, e) from None
        if was_cached:
            raise _weights_error(arch, weights, e, unreadable=True) from None
        raise


# ----- adaptation -----------------------------------------------------------------------------------
def _adapt_stem(model: nn.Module, in_channels: int, pretrained: bool) -> None:
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
    if pretrained:
        with torch.no_grad():
            w = conv.weight.mean(dim=1, keepdim=True) * (conv.in_channels / in_channels)
            new.weight.copy_(w.expand(-1, in_channels, -1, -1))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    replace_module(model, name, new)


def build(arch: str, num_classes: int = 1000, in_channels: int = 3, image_size: int = 224,
          pretrained: bool | str = False) -> nn.Module:
    """Build torchvision's ``arch`` (a key of :data:`FAMILIES`) adapted to ``num_classes`` and ``in_channels``.

    Input ``(N, in_channels, image_size, image_size)``, ImageNet-normalized; output ``(N, num_classes)`` logits.
    """
    if arch not in FAMILIES:
        raise ConfigError(f"unknown zoo model {arch!r}: choose one of {', '.join(FAMILIES)}")
    for key, v in (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConfigError(f"model.{key}={v!r} is invalid: it must be a positive integer")
    fam = FAMILIES[arch]
    if image_size < fam.min_size:
        raise IncompatibleError(f"model '{arch}' cannot take {image_size}x{image_size} images: it needs at least "
                                f"{fam.min_size}x{fam.min_size} (ImageNet models expect 224); raise data.image_size")
    weights = resolve_weights(arch, pretrained)
    model = _build_torchvision(arch, weights)
    model.labkit_head = fam.head  # the head protocol (labkit.models.heads)
    reset_head(model, num_classes)
    model.num_classes = num_classes  # as the notes do for SqueezeNet and ResNet
    if in_channels != 3:
        _adapt_stem(model, in_channels, weights is not None)
        if getattr(model, "transform_input", False):  # GoogLeNet's RGB re-normalization needs 3 channels
            model.transform_input = False
    model.labkit_arch = arch
    return model


# ----- the conf/model/*.yaml targets ---------------------------------------------------------------------------
# ``labkit.models.zoo.<arch>`` is :func:`build` with that arch. The YAMLs say ``arch: <arch>`` and
# ``_target_: labkit.models.zoo.${.arch}``, so the target always matches the arch, and checkpoints saved before
# ``arch:`` existed (they name ``labkit.models.zoo.<arch>`` and no arch) rebuild the same network.
def _named_builder(arch: str) -> Callable[..., nn.Module]:
    def builder(num_classes: int = 1000, in_channels: int = 3, image_size: int = 224,
                pretrained: bool | str = False, arch: str = arch) -> nn.Module:
        return build(arch, num_classes, in_channels, image_size, pretrained)

    fam = FAMILIES[arch]
    builder.__name__ = builder.__qualname__ = arch
    builder.__doc__ = (f"{arch} (torchvision) with head ``{fam.head}`` for ``num_classes``: :func:`build` with "
                       f"``arch={arch!r}``. Input at least {fam.min_size}x{fam.min_size}, 224x224 in the notes.")
    return builder


for _arch in FAMILIES:
    globals()[_arch] = _named_builder(_arch)
del _arch
