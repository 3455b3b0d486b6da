"""What the pre-flight knows about a ``_target_`` without importing it: the keyword arguments it takes, the defaults of
its class hierarchy, its argument rules (each level's ``check_args``) and, for a task, the metrics it logs.

Importing labkit's tasks, data modules and models imports torch and Lightning (about 4 s), and a wrong value on the
command line (``python train.py data.batch_size=0``) must be refused in well under 2 s. So every ``_target_`` that
``conf/`` names is described in :mod:`labkit.run.signatures_table`, generated from the real classes::

    python -m labkit.run.signatures --write      # after changing a constructor, a check_args or logged_metrics

and the rules it lists are the functions of :mod:`labkit.core.rules`, which the classes' ``check_args`` *are*
(``check_args = staticmethod(rules.classification)``), so each rule is written once. ``tests/test_fast_refusals.py``
fails when the table and the classes disagree (argument names, defaults, rules, logged metrics, the package versions
it was made from) and prints the command above.

A target the table does not know (a task of your own in another folder, a third-party class conf/ does not name),
or one whose description depends on a package whose installed version is not the one the table was made from, is
read from the class itself (:func:`read`): the same answer, only slower.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
from typing import Any, Callable, Mapping

from labkit.core import checks

Rule = Callable[[Mapping[str, Any]], None]


@dataclasses.dataclass(frozen=True)
class Signature:
    """What a ``_target_`` accepts and checks."""

    target: str
    name: str  # the class's (or function's) own name, for messages
    params: frozenset[str] | None  # keyword arguments it takes; None: any (a **kwargs that reaches no fixed signature)
    defaults: Mapping[str, Any]  # every level's defaults, a subclass's winning (only where there are rules)
    rules: tuple[Rule, ...]  # each level's check_args, base classes first
    logged_metrics: tuple[str, ...] | None = None  # what a task declares it logs (None: not declared)

    def check(self, given: Mapping[str, Any]) -> None:
        """Run every level's rules on the arguments ``target(**given)`` would see (ConfigError on the first problem):
        what :func:`labkit.core.checks.check_target` does, without importing the class."""
        if self.rules:
            args = {**self.defaults, **given}
            for rule in self.rules:
                rule(args)


def of(target: str) -> Signature:
    """The signature of ``target``: from the table when it is current for this installation, else from the class."""
    return known(target) or read(target)


# ----- the fast path: the table ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _canonical(target: str) -> str:
    """An old module path (``labkit.callbacks.RunCheckpoint`` in a saved config) as the module's current one."""
    from labkit._compat import MOVED

    module, _, name = target.rpartition(".")
    return f"{MOVED[module]}.{name}" if module in MOVED else target


def _resolve(dotted: str) -> Rule:
    module, _, qualname = dotted.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = vars(obj)[part]
    return obj


@functools.lru_cache(maxsize=None)
def known(target: str) -> Signature | None:
    """The table's signature of ``target``; None when the table does not describe it, or was made with another
    version of a package the description depends on (``needs``)."""
    from labkit.run.signatures_table import TABLE, VERSIONS

    target = _canonical(target)
    entry = TABLE.get(target)
    if entry is None or any(_version(dist) != VERSIONS.get(dist) for dist in entry["needs"]):
        return None
    params = entry["params"]
    return Signature(target, entry["name"], None if params is None else frozenset(params), dict(entry["defaults"]),
                     tuple(_resolve(r) for r in entry["rules"]), entry["logged_metrics"])


# ----- the slow path: the class itself ----------------------------------------------------------------------------
def _accepted(obj) -> tuple[frozenset[str] | None, list]:
    """Keyword arguments ``obj`` accepts, following ``**kwargs`` up the class hierarchy (None: anything), and the
    classes or functions whose signatures that read."""
    names: set[str] = set()
    read_from = []
    funcs = [(c, c.__init__) for c in obj.__mro__ if "__init__" in vars(c)] if inspect.isclass(obj) else [(obj, obj)]
    for owner, fn in funcs:
        read_from.append(owner)
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return None, read_from
        names |= {n for n, p in sig.parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            return frozenset(names - {"self"}), read_from
    return None, read_from


def _read(target: str) -> tuple[Signature, list]:
    obj = checks.locate(target)
    params, read_from = _accepted(obj)
    if not inspect.isclass(obj):
        return Signature(target, getattr(obj, "__name__", target), params, {}, ()), read_from
    rules = tuple(klass.check_args for klass in reversed(obj.__mro__) if "check_args" in vars(klass))
    defaults = {}
    if rules:
        defaults = checks.target_arguments(obj, {})
        read_from += [c for c in obj.__mro__ if "__init__" in vars(c) and c is not object]
        read_from += [m for m in map(inspect.getmodule, rules) if m is not None]
    logged = None
    if any("logged_metrics" in vars(k) for k in obj.__mro__):  # a task (Lightning's Trainer has a property of that name)
        from labkit.tasks.base import LabTask

        logged = tuple(obj.logged_metrics) if issubclass(obj, LabTask) else None
    return Signature(target, obj.__name__, params, defaults, rules, logged), read_from


def read(target: str) -> Signature:
    """The signature of ``target`` read from the class (imports it: ConfigError when it cannot be imported)."""
    return _read(target)[0]


# ----- making the table -------------------------------------------------------------------------------------------
def conf_targets(conf_dir=None) -> list[str]:
    """Every ``_target_`` the train config's groups name in ``conf/`` (``${.arch}`` filled in from the same node);
    Hydra's own nodes (``conf/hydra``, a ``hydra:`` key) are not checked by the pre-flight and left out."""
    from pathlib import Path

    from omegaconf import DictConfig, ListConfig, OmegaConf

    from labkit.core.layout import CONF_DIR

    found: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, DictConfig):
            for key in node.keys():
                child = node._get_node(key)
                if key == "hydra":
                    continue
                if key == "_target_" and not child._is_missing():
                    text = str(child._value())
                    found.add(text.replace("${.arch}", str(node.get("arch"))) if "${.arch}" in text else text)
                elif isinstance(child, (DictConfig, ListConfig)):
                    walk(child)
        elif isinstance(node, ListConfig):
            for child in node._iter_ex(resolve=False):
                walk(child)

    root = Path(conf_dir or CONF_DIR)
    for path in sorted(root.rglob("*.yaml")):
        if path.relative_to(root).parts[0] != "hydra":
            walk(OmegaConf.load(path))
    return sorted(t for t in found if "${" not in t)


def _distributions(things) -> set[str]:
    """The installed distributions (other than labkit) that define ``things`` (classes, functions, modules)."""
    from importlib import metadata

    dists = metadata.packages_distributions()
    out = set()
    for thing in things:
        module = thing.__name__ if inspect.ismodule(thing) else thing.__module__
        top = module.split(".")[0]
        if top not in ("labkit", "builtins"):
            out.update(dists.get(top, [top]))
    return out


def describe(target: str) -> dict[str, Any]:
    """The table entry of ``target``, read from the class."""
    sig, read_from = _read(target)
    for rule in sig.rules:
        if not rule.__module__.startswith("labkit.core.rules."):
            raise ValueError(f"{target}: the check_args of {rule.__qualname__} is defined in {rule.__module__}; for the "
                             f"pre-flight to run it without torch, write it in labkit/core/rules/ and make the class's "
                             f"check_args that function (check_args = staticmethod(rules.<name>))")
    return {"name": sig.name, "params": None if sig.params is None else tuple(sorted(sig.params)),
            "defaults": dict(sorted(sig.defaults.items())) if sig.rules else {},
            "rules": tuple(f"{r.__module__}:{r.__qualname__}" for r in sig.rules),
            "logged_metrics": sig.logged_metrics, "needs": tuple(sorted(_distributions(read_from)))}


def generate(targets=None) -> tuple[dict[str, dict], dict[str, str]]:
    """(table, versions) for ``targets`` (default: :func:`conf_targets`)."""
    table = {t: describe(t) for t in (targets or conf_targets())}
    versions = {d: _version(d) for d in sorted({d for e in table.values() for d in e["needs"]})}
    return table, versions


def source(table: Mapping[str, dict], versions: Mapping[str, str]) -> str:
    """The text of :mod:`labkit.run.signatures_table`."""
    import ast
    import pprint

    for target, entry in table.items():  # every default is written as a literal that reads back the same
        if ast.literal_eval(repr(entry["defaults"])) != entry["defaults"]:
            raise ValueError(f"{target}: a default is not a literal: {entry['defaults']}")
    def literal(value, indent: int) -> str:
        return pprint.pformat(value, width=126 - indent, compact=True).replace("\n", "\n" + " " * indent)

    lines = ['"""Generated by ``python -m labkit.run.signatures --write`` from the classes conf/ names: do not edit.',
             "",
             "What the pre-flight needs of each ``_target_`` (see :mod:`labkit.run.signatures`); ``needs``: the packages",
             'besides labkit the entry was read from, used only while their installed versions are ``VERSIONS``."""',
             f"VERSIONS = {literal(dict(versions), 11)}", "", "TABLE = {"]
    for target, entry in sorted(table.items()):
        lines.append(f"    {target!r}: {{")
        for key in ("name", "params", "defaults", "rules", "logged_metrics", "needs"):
            lines.append(f"        {key!r}: {literal(entry[key], 10 + len(repr(key)))},")
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m labkit.run.signatures", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite labkit/run/signatures_table.py")
    args = parser.parse_args(argv)
    text = source(*generate())
    path = Path(__file__).with_name("signatures_table.py")
    if args.write:
        path.write_text(text)
        print(f"wrote {path}")
        return 0
    current = path.read_text() if path.exists() else ""
    print("up to date" if current == text else f"{path} is out of date: run python -m labkit.run.signatures --write")
    return 0 if current == text else 1


if __name__ == "__main__":
    raise SystemExit(main())
