"""The head protocol: which layer of a network is its output layer (its "head"), known in ONE place.

A model declares its head in one of two ways (checked in this order):

* ``get_classifier()`` returning the head module (timm's protocol, so timm models work unchanged);
* ``labkit_head``: the dotted name of the head module, as a class or instance attribute
  (:mod:`labkit.models.zoo` sets it on every torchvision network; ``EncoderClassifier`` declares ``"head"``).

A model that declares nothing gets the head labkit's own models follow by convention: ``output_layer``
(MLP), else the last ``nn.Linear``/``nn.Conv2d`` of ``classifier`` (LeNet, MiniAlexNet), else the model's
last ``nn.Linear``. Models compiled with ``task.compile=true`` are looked through
(:func:`labkit.adapters.torch.unwrap_compiled`).

Who uses it: ``task.freeze=backbone`` trains only :func:`head_parameter_names` (:mod:`labkit.callbacks.finetuning`);
:func:`labkit.models.zoo.build` gives a torchvision network a new head with :func:`reset_head`;
``BackboneEmbedding`` drops it with :func:`remove_head`; the retrieval report embeds images with
:class:`Penultimate` (the head's input: timm's "pre-logits" features).
"""
from __future__ import annotations

import torch
from torch import nn

from labkit.adapters.torch import unwrap_compiled
from labkit.core.errors import ConfigError

HEAD_ATTR = "labkit_head"


class HeadNotFoundError(ConfigError):
    """The model declares no head and follows none of the conventions."""


def unwrap(model: nn.Module) -> nn.Module:
    """The network itself when ``model`` is a ``torch.compile`` wrapper, else ``model``."""
    return unwrap_compiled(model)


def _declared(model: nn.Module) -> tuple[str, nn.Module] | None:
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        name = next((n for n, m in model.named_modules() if m is head and n), None)
        if name is not None:
            return name, head
    name = getattr(model, HEAD_ATTR, None)
    if isinstance(name, str) and name:
        return name, model.get_submodule(name)
    return None


def _conventional(model: nn.Module) -> tuple[str, nn.Module] | None:
    out = getattr(model, "output_layer", None)
    if isinstance(out, nn.Module):
        return "output_layer", out
    clf = getattr(model, "classifier", None)
    if isinstance(clf, nn.Module):
        layers = [(n, m) for n, m in clf.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        if layers:
            n, m = layers[-1]
            return (f"classifier.{n}" if n else "classifier"), m
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def find_head(model: nn.Module) -> tuple[str, nn.Module]:
    """``(dotted name, module)`` of the network's head (see the module docstring for the order).

    Raises :class:`HeadNotFoundError` when the model declares none and has no ``output_layer``,
    ``classifier`` or ``nn.Linear``.
    """
    model = unwrap(model)
    found = _declared(model) or _conventional(model)
    if found is None:
        raise HeadNotFoundError(
            f"cannot tell which layer of {type(model).__name__} is the head (it has no labkit_head attribute, "
            "output_layer, classifier or nn.Linear); give the model a labkit_head attribute naming its output "
            "layer (or a get_classifier() method returning it)")
    return found


def head_name(model: nn.Module) -> str | None:
    """Dotted name of the head (:func:`find_head`), ``None`` when the model has none."""
    try:
        return find_head(model)[0]
    except HeadNotFoundError:
        return None


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names (as in ``model.named_parameters()``) of the head's parameters."""
    name, head = find_head(model)
    return [f"{name}.{n}" for n, _ in head.named_parameters()]


# ----- changing the head -----------------------------------------------------------------------------
def replace_module(model: nn.Module, dotted: str, new: nn.Module) -> None:
    """Put ``new`` in place of the submodule ``dotted`` (``nn.Sequential`` children by their index)."""
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def new_head(old: nn.Module, num_classes: int) -> nn.Module:
    """A freshly initialized layer like ``old`` (Linear, or SqueezeNet's 1x1 Conv2d) with ``num_classes`` outputs."""
    if isinstance(old, nn.Linear):
        return nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    if isinstance(old, nn.Conv2d):  # SqueezeNet: 1x1 convolution to class maps, then global average pooling
        return nn.Conv2d(old.in_channels, num_classes, kernel_size=old.kernel_size, stride=old.stride)
    raise TypeError(f"cannot replace a head of type {type(old).__name__}")


def reset_head(model: nn.Module, num_classes: int) -> None:
    """Give ``model`` a new head for ``num_classes`` (timm's ``reset_classifier`` when the model has one)."""
    reset = getattr(model, "reset_classifier", None)
    if callable(reset):
        reset(num_classes)
        return
    name, old = find_head(model)
    replace_module(model, name, new_head(old, num_classes))


def remove_head(model: nn.Module) -> None:
    """Replace the head by ``nn.Identity``, and so its parent block when only dropout is left in it
    (MobileNetV2's ``classifier``), so that the model outputs the head's input."""
    name = find_head(model)[0]
    replace_module(model, name, nn.Identity())
    parent_name = name.rpartition(".")[0]
    if parent_name:
        parent = model.get_submodule(parent_name)
        if all(isinstance(m, (nn.Dropout, nn.Identity)) for m in parent.children()):
            replace_module(model, parent_name, nn.Identity())
    if HEAD_ATTR in vars(model):
        delattr(model, HEAD_ATTR)


# ----- the head's input as features -------------------------------------------------------------------
class Penultimate(nn.Module):
    """Runs ``model`` and returns the input of its head (:func:`find_head`), flattened, with feature maps
    averaged over their spatial positions. Models without a head return their own (flattened) output.
    Input ``(N, C, H, W)``, output ``(N, D)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        try:
            self.layer_name, self.layer = find_head(model)
        except HeadNotFoundError:
            self.layer_name, self.layer = None, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer is None:
            return self.model(x).flatten(1)
        seen: list[torch.Tensor] = []
        handle = self.layer.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
        try:
            self.model(x)
        finally:
            handle.remove()
        f = seen[-1]
        return f.flatten(2).mean(2) if f.ndim > 2 else f.flatten(1)
