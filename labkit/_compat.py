"""Old import paths, in one place.

Saved ``config.yaml`` files and checkpoints name classes by their import path (``_target_:
labkit.run.callbacks.RunCheckpoint``), and notebooks import ``labkit.api``. When a module moves, its old name is added
to :data:`MOVED` and keeps working: ``import labkit.run.callbacks`` returns the package that now lives at
``labkit.callbacks`` (the same module object, so classes compare equal and checkpoints reload).

Importing labkit installs nothing: the import hook (:func:`install`) goes into ``sys.meta_path`` when an entry point
starts (:func:`labkit.cli.app.run`, the :mod:`labkit.api` calls), or the first time an old name is asked for as an
attribute (``labkit.runs.load_config`` or ``labkit.run.callbacks.RunCheckpoint`` as Hydra's ``_target_`` lookup reads
it: the ``__getattr__`` of ``labkit`` and of its packages).
``labkit.api``, the notebooks' front door, is a real module (labkit/api.py) and needs no hook.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys

# old module path -> where it lives now
MOVED = {
    "labkit.checks": "labkit.core.checks",
    "labkit.compare": "labkit.tracking.compare",
    "labkit.config": "labkit.run.validate",
    "labkit.errors": "labkit.core.errors",
    "labkit.evaluate": "labkit.cli.evaluate",
    "labkit.export": "labkit.cli.export",
    "labkit.history": "labkit.callbacks.history",
    "labkit.images": "labkit.core.images",
    "labkit.predict": "labkit.cli.predict",
    "labkit.quiet": "labkit.core.console",
    "labkit.runs": "labkit.run.directory",
    "labkit.safe_load": "labkit.core.safe_load",
    "labkit.summary": "labkit.tracking.summary",
    "labkit.train": "labkit.run.lifecycle",
    "labkit.tuning": "labkit.run.tuning",
    "labkit.data.tensor": "labkit.data.memory",
    # the callbacks and logger adapters, each in its package since issue 35 (labkit.callbacks, labkit.loggers)
    "labkit.run.callbacks": "labkit.callbacks",
    "labkit.tasks.finetuning": "labkit.callbacks.finetuning",
    "labkit.tracking.history": "labkit.callbacks.history",
    "labkit.tracking.journal": "labkit.loggers.journal",
    "labkit.tracking.loggers": "labkit.loggers",
    "labkit.tracking.progress": "labkit.callbacks.progress",
    "labkit.data.samplers": "labkit.data.sampling",
}

# old attribute paths inside modules that still exist: (module, name) -> the module that defines it now. The old
# module's ``__getattr__`` asks :func:`moved_attribute`.
MOVED_NAMES = {
    ("labkit.data.folder", "Caltech101DataModule"): "labkit.data.caltech",
    ("labkit.core.console", "ModelSummary"): "labkit.callbacks.model_summary",
    # labkit.tracking.loggers (now labkit.loggers) also held a callback and the reopening of a finished run's loggers
    ("labkit.loggers", "RunSummary"): "labkit.callbacks.run_summary",
    ("labkit.loggers", "reopen"): "labkit.tracking.reopen",
    ("labkit.loggers", "send_pictures"): "labkit.tracking.reopen",
}

# old names of classes that were renamed: (module, old name) -> (the module that defines it now, its name). Answered
# by :func:`moved_attribute` like :data:`MOVED_NAMES`; the class keeps its checkpoint state under the old name.
RENAMED = {
    # labkit's freeze/unfreeze callback shadowed pytorch_lightning.callbacks.BackboneFinetuning
    ("labkit.callbacks.finetuning", "BackboneFinetuning"): ("labkit.callbacks.finetuning", "UnfreezeBackbone"),
    ("labkit.callbacks", "BackboneFinetuning"): ("labkit.callbacks.finetuning", "UnfreezeBackbone"),
    # the progress callback's factory shared its name with pytorch_lightning.callbacks.ProgressBar
    ("labkit.callbacks", "ProgressBar"): ("labkit.callbacks.progress", "progress_bar"),
    ("labkit.callbacks.progress", "ProgressBar"): ("labkit.callbacks.progress", "progress_bar"),
}


def moved_attribute(module: str, name: str):
    """``module.name`` for a name that moved (see :data:`MOVED_NAMES`) or was renamed (:data:`RENAMED`); AttributeError
    for any other name."""
    if (module, name) in RENAMED:
        new, new_name = RENAMED[module, name]
        return getattr(importlib.import_module(new), new_name)
    new = MOVED_NAMES.get((module, name))
    if new is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    return getattr(importlib.import_module(new), name)


def current(target: str) -> str:
    """The path that a ``_target_`` written before a move stands for now (``labkit.run.callbacks.RunCheckpoint`` ->
    ``labkit.callbacks.RunCheckpoint``); a class of the callbacks and loggers packages by the package's name
    (``labkit.callbacks.history.History`` -> ``labkit.callbacks.History``, as their schemas name them). Nothing is
    imported."""
    module, _, name = target.rpartition(".")
    module = MOVED.get(module, module)
    if (module, name) in RENAMED:
        module, name = RENAMED[module, name]
    module = MOVED_NAMES.get((module, name), module)
    for package in ("labkit.callbacks", "labkit.loggers"):
        if module.startswith(package + ".") and not name.startswith("_"):
            module = package
    return f"{module}.{name}"


def moved_module(package: str, name: str):
    """``package.name`` for a module that moved (see :data:`MOVED`): installs the import hook (:func:`install`) and
    imports it; AttributeError for any other name (a package's ``__getattr__`` asks this)."""
    old = f"{package}.{name}"
    if old not in MOVED:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    install()
    return importlib.import_module(old)


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an import of an old path with the module at its new path (registered under both names)."""

    def find_spec(self, fullname, path=None, target=None):
        return importlib.machinery.ModuleSpec(fullname, self) if fullname in MOVED else None

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name])
        spec.loader_state = module.__spec__  # the import system stamps the old name's spec on the module next
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state  # give the module its own spec back


def install() -> None:
    """Make the old paths importable (by the entry points, and on the first use of an old name; once)."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())


def old_miner(word: str, margin: float) -> dict:
    """The config nodes that a triplet checkpoint's ``miner: batch_hard|semi_hard`` (labkit before the loss, miner,
    distance and reducer were config nodes) stood for: PML's triplet margin loss and miner on Euclidean distances,
    averaged over the mined triplets. Any other word is returned as it is (and refused by the task's rules)."""
    pml = "pytorch_metric_learning"
    miners = {"batch_hard": {"_target_": f"{pml}.miners.BatchHardMiner"},
              "semi_hard": {"_target_": f"{pml}.miners.TripletMarginMiner", "margin": margin,
                            "type_of_triplets": "semihard"}}
    if word not in miners:
        return {"miner": word}
    return {"miner": miners[word],
            "loss": {"_target_": f"{pml}.losses.TripletMarginLoss", "margin": margin},
            "distance": {"_target_": f"{pml}.distances.LpDistance", "normalize_embeddings": False, "p": 2},
            "reducer": {"_target_": f"{pml}.reducers.MeanReducer"}}
