"""The schema machinery: :func:`schema` registers a dataclass as the one interface of a ``_target_``.

A schema is a plain dataclass whose fields are the target's keyword arguments: name, OmegaConf type, default, and a
comment on the same line that ``python train.py --help <group>/<option>`` prints. Value rules that a type cannot say
(a positive batch size, a fraction, one of three words) are the schema's own ``check(a)``, a static method next to
the fields it reads; a schema that extends another adds its rules to its parent's (base classes first), as the
classes they describe do. Nothing here imports torch or Lightning, so the pre-flight refuses a bad value in a fraction
of a second, and nothing is keyed to an installed version of anything.

Hydra sees every schema through its ConfigStore (:func:`labkit.schemas.store`, called by labkit's Hydra plugin
``hydra_plugins/labkit_schemas`` whenever Hydra starts): each YAML of ``conf/`` that names a ``_target_`` lists its
schema first in its defaults (``- /schema/model/LeNet@_here_``), so OmegaConf refuses an unknown key or a value of
the wrong type while the config is composed.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any, Callable, Mapping

from omegaconf import MISSING

__all__ = ["MISSING", "schema", "REGISTRY", "rules_of", "fields_of", "defaults_of", "docs"]

#: target -> schema class
REGISTRY: dict[str, type] = {}
#: Hydra's keys, which every schema may carry but no constructor takes
HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


def schema(target: str, group: str) -> Callable[[type], type]:
    """Make ``cls`` a dataclass whose ``_target_`` defaults to ``target``, registered as ``schema/<group>/<Name>``."""

    def register(cls: type) -> type:
        annotations = dict(cls.__dict__.get("__annotations__", {}))
        cls.__annotations__ = {"_target_": "str", **annotations}
        cls._target_ = target
        cls = dataclasses.dataclass(cls)
        cls.schema_target = target
        cls.schema_group = group
        if target in REGISTRY and REGISTRY[target] is not cls:
            raise ValueError(f"two schemas for {target}: {REGISTRY[target].__qualname__} and {cls.__qualname__}")
        REGISTRY[target] = cls
        return cls

    return register


def fields_of(cls: type) -> tuple[str, ...]:
    """The keyword arguments a schema describes (Hydra's own keys left out)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in HYDRA_KEYS)


def defaults_of(cls: type) -> dict[str, Any]:
    """Every field's default (``MISSING``, ``'???'``, for a value the config must give)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in HYDRA_KEYS:
            continue
        out[f.name] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return out


def rules_of(cls: type) -> tuple[Callable[[Mapping[str, Any]], None], ...]:
    """Each level's ``check``, base classes first."""
    return tuple(k.__dict__["check"].__func__ for k in reversed(cls.__mro__) if isinstance(k.__dict__.get("check"),
                                                                                         staticmethod))


# ----- documentation from the schema --------------------------------------------------------------------------------
def _comments(cls: type) -> dict[str, str]:
    """``field -> comment`` from the class source: the ``# ...`` on a field's line, or the comment lines above it."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        above: list[str] = []
        for line in lines:
            stripped = line.strip()
            if stripped.startswith("#"):
                above.append(stripped.lstrip("# ").rstrip())
                continue
            m = re.match(r"\s+(\w+)\s*:\s*[^=]+(=.*)?$", line)
            if m and not stripped.startswith(("def ", "@", "return")):
                name = m.group(1)
                trailing = line.split("#", 1)[1].strip() if "#" in line and "'" not in line.split("#", 1)[0][-1:] \
                    else ""
                text = " ".join([*above, trailing]).strip()
                if text:
                    out[name] = text
            above = []
    return out


def _type_name(tp: Any) -> str:
    if isinstance(tp, str):
        return tp
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def docs(cls: type) -> str:
    """The schema as text: one line per field (name, type, default), its comment, then the rules' docstrings."""
    comments = _comments(cls)
    defaults = defaults_of(cls)
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    width = max((len(n) for n in defaults), default=0)
    lines = [f"{cls.schema_group}: {cls.__name__} (_target_: {cls.schema_target})"]
    doc = inspect.getdoc(cls)
    if doc and not doc.startswith(cls.__name__ + "("):
        lines.append("  " + doc.replace("\n", "\n  "))
    for name, default in defaults.items():
        shown = "(required)" if default == MISSING else repr(default)
        line = f"  {name:<{width}}  {_type_name(hints[name])} = {shown}"
        if name in comments:
            line += f"\n  {'':<{width}}    {comments[name]}"
        lines.append(line)
    checks = [inspect.getdoc(r) for r in rules_of(cls)]
    if any(checks):
        lines.append("  rules: " + " ".join(c.replace("\n", " ") for c in checks if c))
    return "\n".join(lines)
