"""numpy internals labkit needs. Nothing here imports numpy until a function is called."""
from __future__ import annotations

import importlib
from typing import Any


def pickled_core_global(module: str, name: str) -> Any | None:
    """The global ``name`` that a pickle written by numpy < 2 finds in ``module`` (``numpy.core.<x>``: array and
    scalar reconstruction), looked up where numpy >= 2 keeps it, ``numpy._core.<x>``; None when ``module`` is not
    under ``numpy.core`` or numpy has no ``numpy._core`` (numpy < 2: the caller looks it up as the pickle names it).

    Why private: numpy 2 moved ``numpy.core`` to ``numpy._core``; its ``numpy.core`` alias still works but warns
    (DeprecationWarning) on every lookup, once per array of every dataset file read. (Pickles name these modules
    themselves: numpy >= 2 writes ``numpy._core`` into new ones.)"""
    if not module.startswith("numpy.core."):
        return None
    try:
        found = importlib.import_module("numpy._core." + module[len("numpy.core."):])
    except ImportError:
        return None
    return getattr(found, name)
