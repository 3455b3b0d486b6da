"""One typed, torch-free schema per ``_target_`` that ``conf/`` names (see :mod:`labkit.schemas.base`).

One module per config group: :mod:`~labkit.schemas.models`, :mod:`~labkit.schemas.data`,
:mod:`~labkit.schemas.tasks`, :mod:`~labkit.schemas.metric` (metric learning's losses, miners, distances,
reducers), :mod:`~labkit.schemas.optim` (optimizers, schedulers), :mod:`~labkit.schemas.trainer`,
:mod:`~labkit.schemas.callbacks`, :mod:`~labkit.schemas.loggers`. A new class gets its schema beside its group's
others (``@schema("<target>", "<group>")``) and its YAML names it first in its defaults list.
"""
from __future__ import annotations

import functools
import importlib

MODULES = ("models", "data", "tasks", "metric", "optim", "trainer", "callbacks", "loggers")


@functools.lru_cache(maxsize=None)
def load_all() -> dict:
    """target -> schema class, every module imported (they import no torch)."""
    from labkit.schemas.base import REGISTRY

    for name in MODULES:
        importlib.import_module(f"labkit.schemas.{name}")
    return dict(REGISTRY)


def store() -> None:
    """Register every schema in Hydra's ConfigStore as ``schema/<group>/<Name>`` (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    held: dict[str, list[str]] = {}
    for cls in load_all().values():
        group = f"schema/{cls.schema_group}"
        if group not in held:
            try:
                held[group] = cs.list(group)
            except OSError:  # (ConfigStore says IOError) not stored yet, or the store was cleared
                held[group] = []
        if f"{cls.__name__}.yaml" not in held[group]:  # each store builds the structured config: 5 ms each, so
            cs.store(group=group, name=cls.__name__, node=cls)  # Hydra's second call (its plugin scan) costs nothing


def of(target: str):
    """The schema of ``target`` (an old module path from ``labkit/_compat.py`` is read as the current one), or None."""
    from labkit._compat import current

    held = load_all()
    return held.get(target) or held.get(current(target))


def find(group_option: str):
    """The schema of ``<group>/<option>`` (``model/lenet``: the ``_target_`` its YAML names), or None."""
    from omegaconf import OmegaConf

    from labkit.core.layout import CONF_DIR

    path = CONF_DIR / f"{group_option}.yaml"
    if not path.is_file():
        return None
    node = OmegaConf.load(path)
    target = node.get("_target_") if hasattr(node, "get") else None
    if isinstance(target, str) and "${.arch}" in target:
        target = target.replace("${.arch}", str(node.get("arch")))
    return of(target) if isinstance(target, str) else None
