"""Reports used by ``evaluate.py``. A task lists the reports that apply to it in ``Task.evaluations``;
each report is a function ``report(task, data, cfg, out_dir) -> dict`` registered here by name."""
from __future__ import annotations

from typing import Callable

REPORTS: dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        REPORTS[name] = fn
        return fn
    return deco


def get_report(name: str) -> Callable:
    _load_builtin()
    if name not in REPORTS:
        raise KeyError(f"unknown evaluation report '{name}'; available: {', '.join(sorted(REPORTS))}")
    return REPORTS[name]


def _load_builtin() -> None:
    import importlib
    import pkgutil

    import labkit.evaluation as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"labkit.evaluation.{mod.name}")
