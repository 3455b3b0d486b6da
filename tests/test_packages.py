"""labkit's callbacks and logger adapters each live in one package, like Lightning's (issue 35, item 2):
labkit.callbacks and labkit.loggers hold every Lightning callback and logger labkit defines, no labkit class takes the
name of one of Lightning's without being that class, the lowest layer holds no Lightning class, and the targets that
saved configs name still build the same objects."""
from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import sys

import pytest
import pytorch_lightning as pl
import pytorch_lightning.callbacks
import pytorch_lightning.loggers
from conftest import ROOT
from hydra.utils import get_class, instantiate
from lightning_fabric.plugins import CheckpointIO
from omegaconf import OmegaConf

import labkit

HYDRA_CALLBACKS = {"labkit.cli.app.Preflight"}  # a Hydra callback (hydra.experimental.callback.Callback), not Lightning's


def _labkit_modules():
    for info in pkgutil.walk_packages(labkit.__path__, "labkit."):
        yield importlib.import_module(info.name)


def _defined_classes():
    for module in _labkit_modules():
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and obj.__module__ == module.__name__ and not name.startswith("__"):
                yield f"{module.__name__}.{name}", obj


def test_every_lightning_callback_and_logger_lives_in_its_package():
    found = dict(_defined_classes())
    callbacks = {k for k, c in found.items() if issubclass(c, pl.Callback)}
    loggers = {k for k, c in found.items() if issubclass(c, pl.loggers.Logger)}
    assert {k for k in callbacks if not k.startswith("labkit.callbacks.")} == set()
    assert {k for k in loggers if not k.startswith("labkit.loggers.")} == set()
    # the checkpoint plugin that the checkpoint callbacks write through stands beside them
    plugins = {k for k, c in found.items() if issubclass(c, CheckpointIO)}
    assert plugins == {"labkit.callbacks.checkpoint.AtomicCheckpointIO"}
    assert "labkit.callbacks.finetuning.UnfreezeBackbone" in callbacks and len(callbacks) >= 10
    assert {"labkit.loggers.mlflow.MLFlowLogger", "labkit.loggers.wandb.WandbLogger",
            "labkit.loggers.csv.CSVLogger"} <= loggers


def test_hydra_callbacks_stay_where_hydra_runs_them():
    for path in HYDRA_CALLBACKS:
        cls = get_class(path)
        assert not issubclass(cls, pl.Callback)
        assert "hydra" in " ".join(c.__module__ for c in cls.__mro__)


def _lightning_names(package) -> dict[str, type]:
    return {n: c for n, c in vars(package).items() if inspect.isclass(c)}


def test_no_labkit_callback_or_logger_shadows_one_of_lightnings():
    """A labkit class named like one of pytorch_lightning.callbacks / .loggers is that class's subclass (Lightning's
    CSVLogger, MLFlowLogger...); labkit's freeze/unfreeze callback, once BackboneFinetuning beside Lightning's class of
    that name, is UnfreezeBackbone."""
    lightning = {**_lightning_names(pytorch_lightning.callbacks), **_lightning_names(pytorch_lightning.loggers)}
    clashes = []
    for path, cls in _defined_classes():
        if not issubclass(cls, (pl.Callback, pl.loggers.Logger)):
            continue  # (the schemas' dataclasses, labkit.schemas.callbacks.ModelSummary..., are configs, not these)
        theirs = lightning.get(cls.__name__)
        if theirs is not None and not issubclass(cls, theirs):
            clashes.append(path)
    assert clashes == []
    from labkit.callbacks import UnfreezeBackbone

    assert "BackboneFinetuning" not in sys.modules["labkit.callbacks"].__all__
    assert "BackboneFinetuning" not in vars(sys.modules["labkit.callbacks.finetuning"])  # only an old name (_compat)
    assert not issubclass(UnfreezeBackbone, pytorch_lightning.callbacks.BackboneFinetuning)
    # nor a function: the progress callback's factory, once labkit.callbacks.ProgressBar, is progress_bar
    import inspect

    for package in ("labkit.callbacks", "labkit.loggers"):
        module = importlib.import_module(package)
        functions = [n for n in module.__all__ if inspect.isfunction(getattr(module, n))]
        assert not [n for n in functions if n in lightning], (package, functions)


def test_core_imports_no_lightning():
    """labkit.core, the lowest layer above the adapters, holds no Lightning class and imports no Lightning module (the
    model summary callback it built lazily is labkit.callbacks.ModelSummary)."""
    for path in sorted((ROOT / "labkit" / "core").glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in imported if m.split(".")[0] in ("pytorch_lightning", "lightning", "lightning_fabric")], \
            path.name


@pytest.mark.parametrize("old, new", [
    ("labkit.run.callbacks.RunCheckpoint", "labkit.callbacks.RunCheckpoint"),
    ("labkit.callbacks.RunCheckpoint", "labkit.callbacks.checkpoint.RunCheckpoint"),
    ("labkit.run.callbacks.EpochSeed", "labkit.callbacks.EpochSeed"),
    ("labkit.run.callbacks.FiniteLossGuard", "labkit.callbacks.FiniteLossGuard"),
    ("labkit.tracking.history.History", "labkit.callbacks.History"),
    ("labkit.history.History", "labkit.callbacks.History"),
    ("labkit.tracking.progress.ProgressBar", "labkit.callbacks.progress_bar"),
    ("labkit.callbacks.ProgressBar", "labkit.callbacks.progress_bar"),
    ("labkit.core.console.ModelSummary", "labkit.callbacks.ModelSummary"),
    ("labkit.quiet.ModelSummary", "labkit.callbacks.ModelSummary"),
    ("labkit.tracking.loggers.RunSummary", "labkit.callbacks.RunSummary"),
    ("labkit.loggers.RunSummary", "labkit.callbacks.RunSummary"),
    ("labkit.tracking.search.TrialReporter", "labkit.callbacks.TrialReporter"),
    ("labkit.tasks.finetuning.BackboneFinetuning", "labkit.callbacks.UnfreezeBackbone"),
    ("labkit.tracking.loggers.CSVLogger", "labkit.loggers.CSVLogger"),
    ("labkit.tracking.loggers.MLFlowLogger", "labkit.loggers.MLFlowLogger"),
    ("labkit.tracking.loggers.WandbLogger", "labkit.loggers.WandbLogger"),
])
def test_old_targets_are_the_new_objects_and_keep_their_schema(old, new):
    from hydra.utils import get_object

    from labkit import schemas

    assert get_object(old) is get_object(new)
    assert schemas.of(old) is schemas.of(new)
    if new.startswith(("labkit.callbacks.", "labkit.loggers.")) and new.count(".") == 2 and \
            "UnfreezeBackbone" not in new and "TrialReporter" not in new:
        assert schemas.of(new) is not None  # the conf's targets have their schema


@pytest.mark.parametrize("target, kwargs", [
    ("labkit.run.callbacks.RunCheckpoint", {"dirpath": "checkpoints", "monitor": None}),
    ("labkit.run.callbacks.EpochSeed", {"seed": 3}),
    ("labkit.tracking.history.History", {"dirpath": "."}),
    ("labkit.core.console.ModelSummary", {"max_depth": 1}),
    ("labkit.tracking.loggers.RunSummary", {}),
    ("labkit.tasks.finetuning.BackboneFinetuning", {"unfreeze_at_epoch": 1}),
    ("labkit.tracking.loggers.CSVLogger", {"save_dir": "csv"}),
])
def test_old_targets_of_saved_configs_still_instantiate(target, kwargs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    obj = instantiate(OmegaConf.create({"_target_": target, **kwargs}))
    assert type(obj).__module__.startswith(("labkit.callbacks.", "labkit.loggers."))


def test_the_renamed_finetuning_callback_reads_checkpoints_written_under_its_old_name():
    """Lightning keys a callback's checkpoint state by its ``state_key`` (the class name): a checkpoint written while
    the class was BackboneFinetuning holds its state under that key, and UnfreezeBackbone reads it back."""
    from labkit.callbacks import UnfreezeBackbone

    cb = UnfreezeBackbone(unfreeze_at_epoch=1)
    assert cb.state_key == "BackboneFinetuning"
    cb.load_state_dict({"internal_optimizer_metadata": {0: [{"lr": 0.5}]}, "loaded_optimizer": False})
    assert cb._internal_optimizer_metadata == {0: [{"lr": 0.5}]}


def _trainer_callbacks(tmp_path, *overrides):
    from conftest import make_cfg

    from labkit.run import lifecycle
    from labkit.run.plan import make

    cfg = make_cfg(["model=mlp", *overrides], tmp_path)
    plan = make(cfg)
    _, task, _ = lifecycle.build(plan)
    trainer, _ = lifecycle.attach(plan, task, lifecycle.RunClock(), loggers=[])
    return trainer.callbacks


def test_attach_chooses_callbacks_by_type_not_by_the_targets_name(tmp_path):
    """A progress bar or learning-rate monitor named by any path (an old one, a subclass of the user's) is what
    trainer.enable_progress_bar=false and logger=none switch off; the run summary gets the run folder's config."""
    from pytorch_lightning.callbacks import LearningRateMonitor, ProgressBar

    from labkit.callbacks import RunSummary

    old_names = ["callbacks.progress_bar._target_=labkit.tracking.progress.ProgressBar",
                 "callbacks.run_summary._target_=labkit.tracking.loggers.RunSummary"]
    shown = _trainer_callbacks(tmp_path / "a", *old_names, "trainer.enable_progress_bar=true")
    assert any(isinstance(c, ProgressBar) for c in shown)
    hidden = _trainer_callbacks(tmp_path / "b", *old_names, "trainer.enable_progress_bar=false")
    assert not any(isinstance(c, (ProgressBar, LearningRateMonitor)) for c in hidden)
    summary = next(c for c in hidden if isinstance(c, RunSummary))
    assert summary.config_of is not None and summary.config_of(tmp_path) is None  # not a run folder
