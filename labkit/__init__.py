"""labkit: Lightning + Hydra experiments for the deep-learning lab notes.

In a notebook: ``from labkit.api import compose, train, load_run`` (see labkit/api.py).
"""
from labkit import quiet  # noqa: F401  (filters known dependency noise before anything else is imported)

__version__ = "0.1.0"
