"""Importing labkit changes nothing in the process: a notebook or a program that imports ``labkit`` or ``labkit.api``
keeps its environment, warning filters, import hooks, logging and OmegaConf's resolvers; labkit's console settings
apply only while an entry point (a command, a ``labkit.api`` call) runs, and are put back afterwards."""
import json
import logging
import os
import subprocess
import sys
import warnings

from conftest import ROOT

PROBE = r"""
import json, logging, os, sys, warnings
from omegaconf import OmegaConf

def state():
    loggers = {name: [logger.level, [repr(h) for h in logger.handlers], [repr(f) for f in logger.filters],
                      logger.propagate, logger.disabled]
               for name, logger in logging.Logger.manager.loggerDict.items() if isinstance(logger, logging.Logger)}
    root = logging.getLogger()
    return {"environ": dict(os.environ), "warnings.filters": [repr(f) for f in warnings.filters],
            "sys.meta_path": [repr(f) for f in sys.meta_path], "sys.path_hooks": [repr(h) for h in sys.path_hooks],
            "root logger": [root.level, [repr(h) for h in root.handlers], [repr(f) for f in root.filters]],
            "logging.disable": logging.root.manager.disable, "handleError": repr(logging.Handler.handleError),
            "loggers": loggers, "resolvers": sorted(n for n in ("labkit_uid", "labkit_run_dir", "labkit_job_name")
                                                    if OmegaConf.has_resolver(n))}

before = state()
import labkit
import labkit.api
after = state()
# loggers that importing labkit's dependencies created: compared only when labkit configured them
after["loggers"] = {name: value for name, value in after["loggers"].items()
                    if name in before["loggers"] or value != [logging.NOTSET, [], [], True, False]}
before["loggers"] = {name: value for name, value in before["loggers"].items() if name in after["loggers"]}
import labkit.cli.api
print(json.dumps({"changed": sorted(k for k in before if before[k] != after[k]),
                  "diff": {k: [before[k], after[k]] for k in before if before[k] != after[k] and k != "environ"},
                  "environ": sorted(set(after["environ"].items()) ^ set(before["environ"].items())),
                  "api": labkit.api is labkit.cli.api, "compose": labkit.api.compose is labkit.compose}))
"""


def test_importing_labkit_and_its_api_changes_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TTY_COMPATIBLE", "TQDM_DISABLE")}
    env["PYTHONPATH"] = str(ROOT)
    env["LABKIT_PLAIN"] = "1"  # output for a file: the case in which labkit's commands set NO_COLOR and friends
    r = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    found = json.loads(r.stdout.strip().splitlines()[-1])
    assert found["changed"] == [], (found["diff"], found["environ"])
    assert found["api"] and found["compose"]  # labkit.api is the notebook API itself, without an import hook


def _state():
    names = ("faiss.loader", "optuna.storages", "pytorch_lightning.utilities.rank_zero",
             "lightning_fabric.utilities.seed")
    return ({k: os.environ.get(k) for k in ("NO_COLOR", "TTY_COMPATIBLE", "TQDM_DISABLE")}, list(warnings.filters),
            {n: (logging.getLogger(n).level, list(logging.getLogger(n).filters)) for n in names})


def test_console_settings_apply_while_an_entry_point_runs_and_are_put_back(monkeypatch):
    from labkit.core import console

    for key in ("NO_COLOR", "TTY_COMPATIBLE", "TQDM_DISABLE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LABKIT_PLAIN", "1")
    before = _state()
    with console.settings():
        with console.settings():  # nested (train.py's job inside its command): the same settings
            console.force_plain(True)  # what a run's progress bar does
        assert os.environ["NO_COLOR"] == "1" and os.environ["TQDM_DISABLE"] == "1"
        assert not logging.getLogger("faiss.loader").isEnabledFor(logging.INFO)
        assert logging.getLogger("faiss.loader").isEnabledFor(logging.WARNING)
        seed = logging.LogRecord("lightning_fabric.utilities.seed", logging.INFO, "", 0, "Seed set to 3", None, None)
        assert not logging.getLogger("lightning_fabric.utilities.seed").filter(seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            with console.settings():
                warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning)
                warnings.warn("a real problem", UserWarning)
        assert [str(w.message) for w in caught] == ["a real problem"]
    assert _state() == before
    assert console._forced is None  # a run's own plain setting ended with it
