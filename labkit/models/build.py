"""Build a network from its config dict (``_target_`` plus arguments), as stored in checkpoints."""
from __future__ import annotations

import copy
from typing import Any, Mapping

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

# keys of a model config that labkit handles itself instead of passing them to the constructor
LABKIT_KEYS = ("init_from",)


def as_dict(cfg: Any) -> Any:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return copy.deepcopy(cfg)


def build_model(cfg: Mapping[str, Any] | nn.Module) -> nn.Module:
    if isinstance(cfg, nn.Module):
        return cfg
    cfg = as_dict(cfg)
    extras = {k: cfg.pop(k) for k in LABKIT_KEYS if k in cfg}
    model = instantiate(cfg)
    if extras.get("init_from"):
        from labkit.models.init import init_from

        init_from(model, extras["init_from"])
    return model


def model_name(cfg: Mapping[str, Any]) -> str:
    target = str(cfg.get("_target_", "?"))
    return target.rsplit(".", 1)[-1]
