"""labkit: Lightning + Hydra experiments for the deep-learning lab notes.

In a notebook: ``from labkit.api import compose, train, load_run`` (see labkit/cli/api.py); ``compose`` and
``load_run`` are also ``labkit.compose`` and ``labkit.load_run``.
"""
from labkit import _compat
from labkit.core import console  # noqa: F401  (filters known dependency noise before anything else is imported)

_compat.install()  # old import paths that saved configs and checkpoints name (labkit.callbacks, labkit.runs, ...)

__version__ = "0.1.0"
__all__ = ["compose", "load_run", "Run"]


def __getattr__(name: str):
    # lazy: ``import labkit`` stays light (no torch)
    if name in __all__:
        from labkit.cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'labkit' has no attribute {name!r}")
