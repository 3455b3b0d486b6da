"""The notebook API: the command line's configs, training and run directories as three Python calls.

    from labkit.cli.api import compose, train, load_run

    cfg = compose("model=lenet", "data=digits", "trainer.max_epochs=3")  # train.py's overrides, as strings
    run = train(cfg)                       # trains and tests like python train.py; run.dir, run.metrics
    run = load_run(run.dir)                # any run directory or .ckpt: run.task, run.data, run.config

``compose`` gives the same config (and the same kind of run directory under ``paths.log_dir``) as
``python train.py <overrides>``; ``train`` runs :func:`labkit.run.lifecycle.execute` as train.py's job does; a
:class:`Run` loads its task (in eval mode) and its data module (set up) the first time they are used, exactly as
evaluate.py does. Each call applies labkit's console settings while it runs and puts the notebook's own back
afterwards (:func:`labkit.core.console.settings`); importing this module changes nothing.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from labkit import _compat
from labkit.core import console, layout
from labkit.run import directory as runs


def compose(*overrides: str, config: str = "train", **values: Any) -> DictConfig:
    """The config ``python train.py *overrides`` would run, with its own new run directory.

    ``overrides`` are command-line strings (``"model=lenet"``, ``"task.optimizer.lr=0.01"``, ``"+trainer.x=1"``);
    ``values`` are plain keys set afterwards (``compose("model=lenet", seed=3)``). ``config`` names another file in
    conf/ (``evaluate``, ``predict``, ``export``), composed without a run directory.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = [str(o) for o in overrides] + [f"{k}={_override_value(v)}" for k, v in values.items()]
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(layout.CONF_DIR), version_base="1.3", job_name="labkit"):
        cfg = hydra_compose(config_name=config, overrides=overrides, return_hydra_config=config == "train")
    if config != "train":
        return cfg
    run_dir = str(cfg.hydra.run.dir)  # resolved now: timestamp, unique suffix, model-data (or the resumed run)
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.paths.output_dir = run_dir
        cfg.overrides = list(overrides)
    return cfg


def _override_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_override_value(x) for x in v) + "]"
    return str(v)


@dataclass
class Run:
    """A run directory: ``config`` (its config.yaml), ``metrics`` (metrics.json), and, loaded on first use,
    ``task`` (the LightningModule from the checkpoint, eval mode, CPU), ``data`` (its data module, set up) and
    ``checkpoint`` (the path). ``ckpt``: best, last or a file name in checkpoints/."""

    dir: Path
    ckpt: str = "best"
    data_dir: str | None = None
    _loaded: tuple | None = field(default=None, repr=False)

    @property
    def config(self) -> DictConfig:
        return runs.load_config(self.dir)

    @property
    def metrics(self) -> dict[str, Any]:
        return runs.read_metrics(self.dir, strict=True)

    def _load(self) -> tuple:
        if self._loaded is None:
            from labkit.cli.evaluate import load_run as _load_run

            _compat.install()  # a saved config may name a module by its old path
            with console.settings():
                _, task, data, ckpt = _load_run(self.dir, self.ckpt, self.data_dir)
            self._loaded = (task.eval(), data, ckpt)
        return self._loaded

    @property
    def task(self):
        return self._load()[0]

    @property
    def data(self):
        return self._load()[1]

    @property
    def checkpoint(self) -> Path:
        return self._load()[2]

    def predict(self, inputs, **options) -> list[dict]:
        """predict.py from Python: ``run.predict("my_digit.png")`` (files, a folder or a glob) -> one dict per image
        (also written to ``<run>/predictions/<timestamp>``). ``options``: topk, k, invert, device."""
        from labkit.cli.predict import predict

        cfg = OmegaConf.create({"run": str(self.dir), "inputs": inputs, "ckpt": self.ckpt, "data_dir": self.data_dir,
                                "topk": 3, "k": 5, "invert": "auto", "batch_size": None, "device": None, **options})
        with console.settings():
            return predict(cfg)["rows"]


def train(cfg: DictConfig) -> Run:
    """Train (and test) like ``python train.py``; returns the :class:`Run` (``run.metrics`` = metrics.json)."""
    from labkit.run.lifecycle import execute

    try:
        with console.settings():  # labkit's console settings while it trains, the notebook's own afterwards
            execute(cfg)
    finally:
        wandb = sys.modules.get("wandb")
        if wandb is not None and getattr(wandb, "run", None) is not None:
            wandb.finish()  # logger=wandb: close this run, or the next train() in the notebook would log into it
    return Run(Path(cfg.paths.output_dir))


def load_run(run: str | Path | Run, ckpt: str = "best", data_dir: str | None = None) -> Run:
    """A finished run from its directory (or one of its .ckpt files): ``run.task``, ``run.data``, ``run.config``."""
    if isinstance(run, Run):
        run = run.dir
    run_dir, ckpt_path = runs.resolve_run(run)
    runs.load_config(run_dir)  # a clear error now when this is not a run directory
    return Run(Path(run_dir), str(ckpt_path) if ckpt_path else ckpt, data_dir)
