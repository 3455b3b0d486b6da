"""Start-up checks of a composed config: unknown keys (with a 'did you mean'), types and impossible values.

Every check runs before any data is read, and every message names the key path and what is allowed.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any

from hydra._internal.utils import _locate
from omegaconf import DictConfig, OmegaConf

from labkit.errors import ConfigError

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def accepted_params(target: str) -> set[str] | None:
    """Keyword arguments ``target`` accepts, following ``**kwargs`` up the class hierarchy; None = anything."""
    try:
        obj = _locate(target)  # a class or a function, without hydra.utils' error logging
    except Exception as e:
        raise ConfigError(f"_target_ '{target}' cannot be imported: {e}") from None
    names: set[str] = set()
    funcs = [c.__init__ for c in obj.__mro__ if "__init__" in vars(c)] if inspect.isclass(obj) else [obj]
    for fn in funcs:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return None
        names |= {n for n, p in sig.parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            return names - {"self"}
    return None


def check_keys(node: Any, path: str, extra: set[str] = frozenset()) -> None:
    """Every key of a ``_target_`` node must be an argument of its target (recursively for nested nodes)."""
    if not isinstance(node, DictConfig):
        return
    target = node.get("_target_")
    if target:
        allowed = accepted_params(target)
        if allowed is not None:
            allowed |= HYDRA_KEYS | set(extra)
            for key in node.keys():
                if key not in allowed:
                    close = difflib.get_close_matches(str(key), sorted(allowed - HYDRA_KEYS), n=1)
                    hint = f" Did you mean '{path}.{close[0]}'?" if close else ""
                    raise ConfigError(f"unknown key '{path}.{key}': {target.rsplit('.', 1)[-1]} takes no argument "
                                      f"'{key}'.{hint} Valid keys: {', '.join(sorted(allowed - HYDRA_KEYS))}")
    for key in node.keys():
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            check_keys(child, f"{path}.{key}")


def _num(cfg, key, *, positive=False, nonneg=False, integer=False, allow_none=True, minimum=None):
    value = OmegaConf.select(cfg, key, default=None)
    if value is None:
        if allow_none:
            return
        raise ConfigError(f"{key} must be set")
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise ConfigError(f"{key}={value!r} is invalid: it must be {'an integer' if integer else 'a number'}")
    if positive and value <= 0:
        raise ConfigError(f"{key}={value!r} is invalid: it must be > 0")
    if nonneg and value < 0:
        raise ConfigError(f"{key}={value!r} is invalid: it must be >= 0")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key}={value!r} is invalid: it must be >= {minimum}")


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` on the first problem found in a train config."""
    for group in ("model", "data", "task", "trainer"):
        if not isinstance(cfg.get(group), DictConfig) or "_target_" not in cfg[group]:
            raise ConfigError(f"config group '{group}' is missing or has no _target_: choose one, e.g. {group}=...")
    check_keys(cfg.data, "data")
    check_keys(cfg.model, "model", extra={"init_from"})
    check_keys(cfg.task, "task")
    check_keys(cfg.trainer, "trainer")
    for group in ("callbacks", "logger"):
        node = cfg.get(group)
        if isinstance(node, DictConfig):
            for key in node.keys():
                check_keys(node[key], f"{group}.{key}")
    seed = cfg.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"seed={seed!r} is invalid: use a non-negative integer, or null for a random seed")
    _num(cfg, "data.batch_size", positive=True, integer=True, allow_none=False)
    _num(cfg, "data.eval_batch_size", positive=True, integer=True)
    _num(cfg, "data.num_workers", nonneg=True, integer=True)
    _num(cfg, "task.optimizer.lr", positive=True)
    _num(cfg, "task.optimizer.momentum", nonneg=True)
    _num(cfg, "task.optimizer.weight_decay", nonneg=True)
    _num(cfg, "task.margin", nonneg=True)
    _num(cfg, "trainer.max_epochs", integer=True, minimum=-1)
    _num(cfg, "trainer.log_every_n_steps", positive=True, integer=True)
