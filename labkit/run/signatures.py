"""What the pre-flight knows about a ``_target_``: the keyword arguments it takes, their defaults, its argument rules
and, for a task, the metrics it logs.

For every target ``conf/`` names this is its schema (:mod:`labkit.schemas`): torch-free dataclasses, so a wrong value
on the command line (``python train.py data.batch_size=0``) is refused in well under a second, whatever versions of
torch or Lightning are installed. A target without a schema (a class of your own in another folder, a third-party
class conf/ does not name) is read from the class itself (:func:`read`): the same answer, only slower (it imports it).
"""
from __future__ import annotations

import dataclasses
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
    defaults: Mapping[str, Any]  # every argument's default
    rules: tuple[Rule, ...]  # each level's rules, base classes first
    logged_metrics: tuple[str, ...] | None = None  # what a task declares it logs (None: not declared)

    def check(self, given: Mapping[str, Any], at: str | None = None) -> None:
        """Run every level's rules on the arguments ``target(**given)`` would see (ConfigError on the first problem),
        without importing the class. ``at``: where the node is in the config (``callbacks.model_checkpoint``), for
        the rules of a schema whose nodes go by several names (their ``check(a, at=...)`` names the keys with it)."""
        if self.rules:
            args = {**self.defaults, **given}
            for rule in self.rules:
                if at is not None and "at" in inspect.signature(rule).parameters:
                    rule(args, at=at)
                else:
                    rule(args)


def of(target: str) -> Signature:
    """The signature of ``target``: from its schema, else from the class."""
    return from_schema(target) or read(target)


def from_schema(target: str) -> Signature | None:
    """The signature that ``target``'s schema declares; None when it has none."""
    from labkit import schemas
    from labkit.schemas.base import defaults_of, fields_of, rules_of

    cls = schemas.of(target)
    if cls is None:
        return None
    logged = getattr(cls, "logged_metrics", None)
    return Signature(cls.schema_target, cls.schema_target.rsplit(".", 1)[-1], frozenset(fields_of(cls)),
                     defaults_of(cls), rules_of(cls), tuple(logged) if logged is not None else None)


# ----- the slow path: the class itself ----------------------------------------------------------------------------
def accepted(obj) -> frozenset[str] | None:
    """Keyword arguments ``obj`` accepts, following ``**kwargs`` up the class hierarchy (None: anything)."""
    names: set[str] = set()
    funcs = [c.__init__ for c in obj.__mro__ if "__init__" in vars(c)] if inspect.isclass(obj) else [obj]
    for fn in funcs:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return None
        names |= {n for n, p in sig.parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            return frozenset(names - {"self"})
    return None


def read(target: str) -> Signature:
    """The signature of ``target`` read from the class (imports it: ConfigError when it cannot be imported)."""
    obj = checks.locate(target)
    params = accepted(obj)
    if not inspect.isclass(obj):
        return Signature(target, getattr(obj, "__name__", target), params, {}, ())
    rules = tuple(klass.check_args for klass in reversed(obj.__mro__) if "check_args" in vars(klass))
    defaults = checks.target_arguments(obj, {}) if rules else {}
    logged = None
    if any("logged_metrics" in vars(k) for k in obj.__mro__):  # a task (Lightning's Trainer has a property of that name)
        from labkit.tasks.base import LabTask

        logged = tuple(obj.logged_metrics) if issubclass(obj, LabTask) else None
    return Signature(target, obj.__name__, params, defaults, rules, logged)


def targets_in(path) -> set[str]:
    """The ``_target_``s one YAML file names (``${.arch}`` filled in from the same node; a ``hydra:`` key left out)."""
    from omegaconf import OmegaConf

    found: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            target = node.get("_target_")
            if isinstance(target, str):
                found.add(target.replace("${.arch}", str(node.get("arch"))) if "${.arch}" in target else target)
            for key, child in node.items():
                if key != "hydra":
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(OmegaConf.to_container(OmegaConf.load(path), resolve=False))
    return {t for t in found if "${" not in t}


def conf_targets(conf_dir=None) -> list[str]:
    """Every ``_target_`` the train config's groups name in ``conf/`` (Hydra's own group ``conf/hydra`` left out)."""
    from pathlib import Path

    from labkit.core.layout import CONF_DIR

    root = Path(conf_dir or CONF_DIR)
    return sorted(set().union(*(targets_in(p) for p in root.rglob("*.yaml") if p.relative_to(root).parts[0] != "hydra")))
