"""labkit: Lightning + Hydra experiments for the deep-learning lab notes.

In a notebook: ``from labkit.api import compose, train, load_run`` (see labkit/cli/api.py); ``compose`` and
``load_run`` are also ``labkit.compose`` and ``labkit.load_run``.

Importing labkit changes nothing in the process (environment, warning filters, logging, import hooks): the entry
points apply labkit's console settings while they run (:func:`labkit.core.console.settings`), and old import paths
(:mod:`labkit._compat`) are answered when they are asked for.
"""
__version__ = "0.1.0"
__all__ = ["compose", "load_run", "Run"]


def __getattr__(name: str):
    # lazy: ``import labkit`` stays light (no torch)
    if name in __all__:
        from labkit.cli import api

        return getattr(api, name)
    if name.startswith("_"):  # (the import system's own questions, e.g. while importing labkit._compat itself)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import labkit._compat

    return labkit._compat.moved_module(__name__, name)  # labkit.callbacks, labkit.runs, ... (saved configs name them)
