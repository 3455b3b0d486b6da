"""Whether a command line's config sets ``hydra.mode`` (a single run or a sweep), read without composing it.

Hydra answers this by composing the whole config once in MULTIRUN mode and reading ``hydra.mode`` (its
``Hydra.get_mode``), before it composes the config again for the run: with labkit's typed schemas that first
composition is a third of a refused command's time (``benchmarks/refusals.py``). Only two things can make the answer
anything but "not set": an override of ``hydra.mode`` (or of the search path), and a config file that sets it
(labkit's own: ``hparams_search/optuna.yaml``). :func:`mode` finds those files in the search path and answers when
the command line alone decides whether one of them is used; otherwise it says it does not know, and Hydra composes
as it always did. ``tests/test_mode.py`` holds its answers to Hydra's own on a table of command lines.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator, Sequence

UNKNOWN = "unknown"  # mode()'s answer when only composing the config can tell

_PACKAGE = re.compile(r"^#\s*@package\s+(\S+)", re.MULTILINE)
_MODE_LINE = re.compile(r"^\s*mode\s*:", re.MULTILINE)
_MOVED = re.compile(r"@(_global_|hydra)\b")
_SWEEP = re.compile(r"[,(\[]")  # a sweep of choices (a,b; choice(...); glob(...)): only composing knows


@dataclass(frozen=True)
class _File:
    group: str  # "hparams_search" ("" at the root of the search path)
    option: str  # "optuna"
    text: str


@dataclass(frozen=True)
class _Setter:
    """A config file with a ``mode:`` key that may land on ``hydra.mode``."""

    group: str
    option: str
    mode: object  # the value it sets; None when it is not sure to set hydra.mode (then only composing can tell)


def _yaml_files(scheme: str, path: str) -> Iterator[tuple[str, str]]:
    """(path relative to the source without ``.yaml``, text) of every YAML file of one config source."""
    if scheme == "file":
        root = Path(path)
        for f in sorted(root.rglob("*.yaml")) if root.is_dir() else []:
            yield f.relative_to(root).with_suffix("").as_posix(), f.read_text(encoding="utf-8", errors="replace")
    elif scheme == "pkg":
        try:
            root = resources.files(path)
        except (ModuleNotFoundError, TypeError, ValueError):
            return

        def walk(node, prefix: str):
            for child in sorted(node.iterdir(), key=lambda c: c.name):
                if child.is_dir() and child.name != "__pycache__":
                    yield from walk(child, f"{prefix}{child.name}/")
                elif child.name.endswith(".yaml"):
                    yield f"{prefix}{child.name[:-5]}", child.read_text(encoding="utf-8", errors="replace")

        yield from walk(root, "")


def _setter(file: _File) -> _Setter | None:
    """The file as a setter of ``hydra.mode`` (its value, or None when only composing can tell the value), or None
    when it cannot set it: no ``mode:`` key, or one under a package other than the root's and ``hydra``."""
    if not _MODE_LINE.search(file.text):
        return None
    import yaml

    header = _PACKAGE.search(file.text)
    package = header.group(1) if header else file.group.replace("/", ".")
    package = package.replace("_group_", file.group.replace("/", "."))
    package = "" if package == "_global_" else package.removeprefix("_global_.")
    try:
        content = yaml.safe_load(file.text)
    except yaml.YAMLError:
        return _Setter(file.group, file.option, None)
    content = content if isinstance(content, dict) else {}
    if package == "":
        hydra = content.get("hydra")
        if not isinstance(hydra, dict) or "mode" not in hydra:
            return None
        value = hydra["mode"]
    elif package == "hydra":
        if "mode" not in content:
            return None
        value = content["mode"]
    else:
        return None  # lands under its package (callbacks.early_stopping.mode): never on hydra.mode
    return _Setter(file.group, file.option, value if value in ("RUN", "MULTIRUN") else None)


def _selection(setter: _Setter, overrides: Sequence[str], others: Iterable[_File], primary: str) -> bool | None:
    """Whether ``setter``'s file is in the composed config: True/False when the command line decides it, None when a
    config file's defaults list may pick it, or when the command line names a group the primary config (its text:
    ``primary``) does not list (an error, or a group another file brings: only composing can tell)."""
    if not setter.group:
        return None  # a file at the root of the search path: picked by a defaults list, or the primary config
    for override in overrides:
        key, _, value = override.partition("=")
        bare = key.lstrip("+~")
        if bare.startswith(setter.group + "@"):
            return None
        if bare == setter.group:
            if key.startswith("+"):
                return None  # appending a group the defaults list may already have: an error, or not
            if key.startswith("~"):
                return False
            if _SWEEP.search(value):
                return None
            if not re.search(rf"(^|[\s/]){re.escape(setter.group)}\s*:", primary, re.MULTILINE):
                return None
            return value.strip().strip("'\"") == setter.option
    last = setter.group.rsplit("/", 1)[-1]
    picked = re.compile(rf"(^|[\s/]){re.escape(last)}(@\S+)?\s*:\s*['\"]?{re.escape(setter.option)}['\"]?\s*(#.*)?$",
                        re.MULTILINE)
    if any(picked.search(f.text) for f in others if (f.group, f.option) != (setter.group, setter.option)):
        return None
    return False


def mode(sources: Iterable[tuple[str, str]], config_name: str | None, overrides: Sequence[str]):
    """``hydra.mode`` as Hydra would compose it for ``overrides`` (None when the config does not set it, else the
    value a config file sets, ``"RUN"`` or ``"MULTIRUN"``), or :data:`UNKNOWN` when only composing can tell.

    ``sources``: the search path's config sources as (scheme, path) pairs (``file``/``pkg``; structured sources, the
    ConfigStore, hold labkit's schemas and Hydra's own, which set no mode)."""
    for override in overrides:
        bare = override.partition("=")[0].lstrip("+~")
        if bare == "hydra" or bare.startswith(("hydra.mode", "hydra.searchpath", "hydra/")):
            return UNKNOWN
    files = [_File(*(rel.rsplit("/", 1) if "/" in rel else ("", rel)), text)
             for scheme, path in sources for rel, text in _yaml_files(scheme, path)]
    if any("searchpath" in f.text for f in files):
        return UNKNOWN  # the config adds to the search path: files this scan has not seen
    if any(_MOVED.search(f.text) for f in files) or any(_MOVED.search(o.partition("=")[0]) for o in overrides):
        return UNKNOWN  # a defaults entry moves a file to the root or to hydra (group@_global_): its mode: may land
    primary = next((f.text for f in files if not f.group and f.option == config_name), None)
    if primary is None:
        return UNKNOWN  # the primary config is not a YAML file of these sources (a structured config)
    picked = []
    for file in files:
        setter = _setter(file)
        if setter is None:
            continue
        if not setter.group and setter.option == config_name:
            return UNKNOWN  # the primary config itself has a mode: key
        chosen = _selection(setter, overrides, files, primary)
        if chosen is None or (chosen and setter.mode is None):
            return UNKNOWN
        if chosen:
            picked.append(setter)
    if len(picked) > 1:
        return UNKNOWN
    return picked[0].mode if picked else None
