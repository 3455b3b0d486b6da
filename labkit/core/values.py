"""Small questions about plain values that several layers ask: is it a finite number, and a nested mapping as one
level of dotted (or slashed) keys."""
from __future__ import annotations

import math
from typing import Any, Callable


def finite(v: Any) -> bool:
    """A real, finite number (booleans are not numbers here; NaN and infinities are not finite)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def flatten(node: Any, sep: str = ".", leaf: Callable[[Any], Any] | None = None, prefix: str = "") -> dict[str, Any]:
    """A nested dict as one level, ``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (``sep`` joins the keys); everything that is
    not a dict (lists too) is one value, passed through ``leaf`` when given."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, sep, leaf, f"{prefix}{sep}{k}" if prefix else str(k)))
        return out
    return {prefix: node if leaf is None else leaf(node)}


def resolved(value: Any) -> Any:
    """An OmegaConf node as Python containers with its interpolations resolved; any other value as it is."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
