"""labkit.cli.mode: ``hydra.mode`` read from the command line and the config files' text, never different from what
Hydra's own composition (``Hydra.get_mode``) answers, and answered without composing for labkit's commands."""
from __future__ import annotations

import shutil

import pytest
from conftest import ROOT
from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_config_search_path
from hydra.core.global_hydra import GlobalHydra

from labkit.cli import mode

CONF = ROOT / "conf"


def _hydra(conf):
    GlobalHydra.instance().clear()
    return Hydra.create_main_hydra2(task_name="train", config_search_path=create_config_search_path(str(conf)))


def _both(conf, overrides, config_name="train"):
    """(labkit's answer, Hydra's answer as a string or None) for one command line."""
    app = _hydra(conf)
    try:
        sources = [(s.scheme(), s.path) for s in app.config_loader.get_sources()]
        fast = mode.mode(sources, config_name, overrides)
        composed = app.get_mode(config_name=config_name, overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()
    return fast, None if composed is None else composed.name


# (overrides, labkit's answer): labkit answers these without composing, and Hydra agrees
ANSWERED = [
    ([], None),
    (["data.batch_size=0"], None),
    (["model=lenett"], None),  # Hydra cannot compose it: no mode either
    (["experiment=mlp_fashion_mnist"], None),  # has callbacks' mode: min, not hydra.mode
    (["callbacks=early_stopping", "callbacks.early_stopping.mode=max"], None),
    (["hydra.run.dir=/tmp/x", "trainer.max_epochs=2"], None),
    (["hparams_search=optuna"], "MULTIRUN"),
    (["hparams_search=optuna", "hydra.sweeper.n_trials=3", "task.optimizer.lr=0.1"], "MULTIRUN"),
    (["hparams_search=null"], None),
    (["~hparams_search"], None),
]


@pytest.mark.parametrize("overrides,expected", ANSWERED, ids=[" ".join(o) or "(none)" for o, _ in ANSWERED])
def test_labkit_answers_as_hydras_composition_does(overrides, expected):
    fast, composed = _both(CONF, overrides)
    assert fast == expected
    assert fast == composed, f"labkit says {fast}, Hydra's composition {composed}"


@pytest.mark.parametrize("overrides", [["hydra.mode=MULTIRUN"], ["hydra.mode=RUN", "hparams_search=optuna"],
                                       ["hparams_search=optuna,null"], ["hydra/sweeper=basic"],
                                       ["+hparams_search=optuna"], ["++hparams_search=optuna"],  # (errors)
                                       ["+hydra.searchpath=[file:///tmp]"]])
def test_what_only_composing_can_tell_is_left_to_hydra(overrides):
    fast, _ = _both(CONF, overrides)
    assert fast is mode.UNKNOWN


def test_a_group_the_primary_config_does_not_list_is_left_to_hydra():
    """evaluate.yaml has no hparams_search group: Hydra cannot compose ``hparams_search=optuna`` there (None)."""
    fast, composed = _both(CONF, ["run=/nowhere", "hparams_search=optuna"], config_name="evaluate")
    assert (fast, composed) == (mode.UNKNOWN, None)
    assert _both(CONF, ["run=/nowhere"], config_name="evaluate") == (None, None)


def _conf_with(tmp_path, files: dict[str, str]):
    """labkit's conf/ with ``files`` added and a ``launch`` group (default: none) in train.yaml's defaults list."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    train = (conf / "train.yaml").read_text()
    (conf / "train.yaml").write_text(train.replace("  - experiment: null\n", "  - launch: null\n  - experiment: null\n"))
    for name, text in files.items():
        (conf / name).parent.mkdir(parents=True, exist_ok=True)
        (conf / name).write_text(text)
    return conf


SWEEP = "# @package _global_\nhydra:\n  mode: MULTIRUN\n"


def test_a_preset_that_picks_a_sweep_is_left_to_hydra(tmp_path):
    conf = _conf_with(tmp_path, {"launch/sweep.yaml": SWEEP,
                                 "experiment/my_search.yaml": "# @package _global_\ndefaults:\n  - override /launch: sweep\n"})
    assert _both(conf, ["experiment=my_search"]) == (mode.UNKNOWN, "MULTIRUN")
    fast, composed = _both(conf, ["experiment=my_search", "launch=null"])
    assert fast == composed == None  # noqa: E711  (the command line's choice wins over any defaults list)
    fast, composed = _both(conf, ["launch=sweep"])
    assert fast == composed == "MULTIRUN"


@pytest.mark.parametrize("files,overrides,hydras", [
    # a file of a group that sets hydra.mode (package _global_), picked on the command line
    ({"launch/sweep.yaml": SWEEP}, ["launch=sweep"], "MULTIRUN"),
    ({"launch/single.yaml": "# @package _global_\nhydra:\n  mode: RUN\n"}, ["launch=single"], "RUN"),
    ({"launch/single.yaml": "# @package hydra\nmode: RUN\n"}, ["launch=single"], "RUN"),
    # not picked: Hydra's answer is None and so is labkit's
    ({"launch/sweep.yaml": SWEEP}, [], None),
    ({"launch/sweep.yaml": SWEEP, "launch/other.yaml": "# @package _global_\nx: 1\n"}, ["launch=other"], None),
    # under its own package it is launch.hydra.mode, not hydra.mode
    ({"launch/other.yaml": "hydra:\n  mode: MULTIRUN\n"}, ["launch=other"], None),
    # moved to the root by a defaults entry: only composing tells
    ({"extra/other.yaml": "hydra:\n  mode: MULTIRUN\n",
      "experiment/moved.yaml": "# @package _global_\ndefaults:\n  - /extra@_global_: other\n"},
     ["experiment=moved"], "MULTIRUN"),
])
def test_files_that_set_the_mode(tmp_path, files, overrides, hydras):
    fast, composed = _both(_conf_with(tmp_path, files), overrides)
    assert composed == hydras
    if any("@_global_" in text for text in files.values()):
        assert fast is mode.UNKNOWN
    else:
        assert fast == composed
