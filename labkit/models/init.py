"""Initialize a network from another run's weights (fine-tuning, note 001's CIFAR-100 -> CIFAR-10).

``init_from=<run dir or checkpoint>`` (a top-level key, applied by labkit.run.lifecycle) copies every tensor whose
name and shape match and leaves the rest as freshly initialized, e.g. a MiniAlexNetV4 trained on CIFAR-100 gives all its
layers but the 100-way output layer to a 10-class MiniAlexNetV4.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from labkit.adapters.torch import unwrap_compiled
from labkit.core.errors import IncompatibleError
from labkit.core.safe_load import load_checkpoint, state_dict_of

log = logging.getLogger("labkit")


def _layers(names: list[str]) -> list[str]:
    """Module names of tensor names, in order, without repeats (``features.0.weight`` -> ``features.0``)."""
    seen: dict[str, None] = {}
    for n in names:
        seen.setdefault(n.rpartition(".")[0] or n, None)
    return list(seen)


def init_from(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Copy into ``model`` every tensor of the checkpoint (or state_dict file) ``path`` whose name and shape match.
    (Which file a run directory stands for is decided by :func:`labkit.run.plan.make`, which checked it.)

    Returns ``{"kept": [...], "new": [...], "skipped": [...]}``: tensor names of ``model`` loaded from
    ``path``, tensor names of ``model`` left as initialized (absent from the source or of another
    shape), and tensor names of the source that were not used. Raises :class:`IncompatibleError`
    when nothing matches.
    """
    ckpt = Path(path)
    source = state_dict_of(load_checkpoint(ckpt))
    target = unwrap_compiled(model)
    own = target.state_dict()
    kept, new, mismatched = [], [], []
    for name, tensor in own.items():
        src = source.get(name)
        if src is not None and src.shape == tensor.shape:
            kept.append(name)
        else:
            new.append(name)
            if src is not None:
                mismatched.append(f"{name} {tuple(src.shape)} -> {tuple(tensor.shape)}")
    new_set = set(new)
    skipped = [n for n in source if n not in own or n in new_set]
    if not kept:
        raise IncompatibleError(
            f"init_from {ckpt}: no tensor matches the model {type(target).__name__} by name and shape, so there is "
            f"nothing to fine-tune from. The source has {len(source)} tensors (e.g. {', '.join(list(source)[:4])}), "
            f"the model {len(own)} (e.g. {', '.join(list(own)[:4])}): is it a checkpoint of the same architecture?")
    with torch.no_grad():
        for name in kept:
            own[name].copy_(source[name].to(dtype=own[name].dtype))
    kept_layers, new_layers = _layers(kept), _layers(new)
    log.info("init_from %s: kept %d tensors of %d layers (%s)", ckpt, len(kept), len(kept_layers),
             ", ".join(kept_layers))
    if new:
        log.info("init_from: %d tensors of %d layers are new (freshly initialized): %s", len(new), len(new_layers),
                 ", ".join(new_layers))
    if mismatched:
        log.info("init_from: shape differs, not copied: %s", "; ".join(mismatched))
    if skipped:
        log.info("init_from: %d source tensors unused: %s", len(skipped), ", ".join(_layers(skipped)))
    return {"kept": kept, "new": new, "skipped": skipped}
