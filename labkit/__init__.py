"""labkit: Lightning + Hydra experiments for the deep-learning lab notes.

In a notebook: ``from labkit.api import compose, train, load_run`` (see labkit/api.py); ``compose`` and
``load_run`` are also ``labkit.compose`` and ``labkit.load_run``.
"""
from labkit import quiet  # noqa: F401  (filters known dependency noise before anything else is imported)

__version__ = "0.1.0"
__all__ = ["compose", "load_run", "Run"]


def __getattr__(name: str):
    # lazy: ``import labkit`` stays light (no torch); ``labkit.train`` is the training module, hence labkit.api.train
    if name in __all__:
        from labkit import api

        return getattr(api, name)
    raise AttributeError(f"module 'labkit' has no attribute {name!r}")
