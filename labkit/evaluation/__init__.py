"""Reports used by ``evaluate.py``. A task lists the reports that apply to it in ``Task.evaluations``;
each report is a function ``report(task, data, cfg, out_dir) -> dict`` registered here by name, with the keys of its
result that tables show first (``@register("retrieval", headlines=("precision_at_1", "map_at_r"))``): sweep summaries
and compare.py read them from here (:func:`report_headlines`), and a task's ``headline_metrics`` names them
``<report>/<key>``.

This module imports nothing heavy: the report modules (torch, numpy) are imported when a report is first looked up.
"""
from __future__ import annotations

from typing import Callable, Sequence

REPORTS: dict[str, Callable] = {}
# report name -> the keys of its result that tables show (its part of evaluation/<split>/report.json)
HEADLINES: dict[str, tuple[str, ...]] = {}


def register(name: str, headlines: Sequence[str] = ()):
    """Register the decorated function as report ``name``; ``headlines``: the keys of the dict it returns that
    summaries and compare.py show as ``<name>/<key>`` columns."""
    if isinstance(headlines, str):
        raise TypeError(f"register({name!r}, headlines={headlines!r}): headlines is a tuple of keys, "
                        f"e.g. headlines=({headlines!r},)")

    def deco(fn):
        REPORTS[name] = fn
        HEADLINES[name] = tuple(headlines)
        return fn
    return deco


def get_report(name: str) -> Callable:
    _load_builtin()
    if name not in REPORTS:
        raise KeyError(f"unknown evaluation report '{name}'; available: {', '.join(sorted(REPORTS))}")
    return REPORTS[name]


def report_headlines() -> dict[str, tuple[str, ...]]:
    """Every registered report's headline keys, by report name (in name order)."""
    _load_builtin()
    return {name: HEADLINES.get(name, ()) for name in sorted(REPORTS)}


def _load_builtin() -> None:
    import importlib
    import pkgutil

    import labkit.evaluation as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"labkit.evaluation.{mod.name}")
