"""Build a network from its config dict (``_target_`` plus arguments), as stored in checkpoints."""
from __future__ import annotations

import copy
from typing import Any, Mapping

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn


def as_dict(cfg: Any) -> Any:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return copy.deepcopy(cfg)


def build_model(cfg: Mapping[str, Any] | nn.Module) -> nn.Module:
    if isinstance(cfg, nn.Module):
        return cfg
    return instantiate(as_dict(cfg))


def model_name(cfg: Mapping[str, Any]) -> str:
    target = str(cfg.get("_target_", "?"))
    return target.rsplit(".", 1)[-1]
