"""Reports used by ``evaluate.py``. A task lists the reports that apply to it in ``Task.evaluations``;
each report is a function ``report(task, data, cfg, out_dir) -> dict`` registered here by name, with the keys of its
result that tables show first (``@register("retrieval", headlines=("precision_at_1", "map_at_r"))``): sweep summaries
and compare.py read them from here (:func:`report_headlines`), and a task's ``headline_metrics`` names them
``<report>/<key>``. ``evaluate.py`` sends the headlines, with the baselines a report declares beside them
(``baselines=("knn_accuracy_pixels", ...)``: the same figure on raw pixels), to the loggers the run was trained with
(:func:`logged_figures`).

This module imports nothing heavy: the report modules (torch, numpy) are imported when a report is first looked up.
"""
from __future__ import annotations

from typing import Callable, Sequence

#: labkit's own reports: name -> the module that registers it (imported when a report is first looked up, so the
#: pre-flight knows the names without importing torch; tests/test_schemas.py checks each module registers its names)
BUILTIN: dict[str, str] = {
    "classification": "labkit.evaluation.classification",
    "representation": "labkit.evaluation.representation",
    "compression": "labkit.evaluation.representation",
    "localization": "labkit.evaluation.localization",
    "anomaly": "labkit.evaluation.anomaly",
    "retrieval": "labkit.evaluation.retrieval",
}
REPORTS: dict[str, Callable] = {}
# report name -> the keys of its result that tables show (its part of evaluation/<split>/report.json)
HEADLINES: dict[str, tuple[str, ...]] = {}
# report name -> the keys its headlines are measured against (the same figure on raw pixels)
BASELINES: dict[str, tuple[str, ...]] = {}


def register(name: str, headlines: Sequence[str] = (), baselines: Sequence[str] = ()):
    """Register the decorated function as report ``name``; ``headlines``: the keys of the dict it returns that
    summaries and compare.py show as ``<name>/<key>`` columns; ``baselines``: keys that the loggers receive beside
    the headlines (what the headlines are compared with, e.g. the same figure on raw pixels)."""
    for what, keys in (("headlines", headlines), ("baselines", baselines)):
        if isinstance(keys, str):
            raise TypeError(f"register({name!r}, {what}={keys!r}): {what} is a tuple of keys, e.g. {what}=({keys!r},)")

    def deco(fn):
        REPORTS[name] = fn
        HEADLINES[name] = tuple(headlines)
        BASELINES[name] = tuple(baselines)
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


def logged_figures(name: str) -> tuple[str, ...]:
    """The keys of report ``name`` that evaluate.py sends to the run's loggers: its headlines, then its baselines."""
    _load_builtin()
    return HEADLINES.get(name, ()) + tuple(k for k in BASELINES.get(name, ()) if k not in HEADLINES.get(name, ()))


def _load_builtin() -> None:
    import importlib

    for module in sorted(set(BUILTIN.values())):
        importlib.import_module(module)
