"""Weights & Biases (``logger=wandb``): :class:`WandbLogger`, Lightning's, offline by default
(conf/logger/wandb.yaml), named after the run directory; online, the server is checked when the logger is built."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import WandbLogger as _PLWandbLogger
from pytorch_lightning.loggers.logger import DummyExperiment
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from labkit.adapters import lightning as lightning_internals
from labkit.adapters import wandb as wandb_internals
from labkit.core import console
from labkit.core.servers import CONNECT_TIMEOUT_S
from labkit.loggers.base import _best_model_only, _require, _ServerLogging
from labkit.schemas import loggers as schema

log = logging.getLogger("labkit")



def _wandb_base_url(init: dict) -> str:
    settings = init.get("settings")
    url = settings.get("base_url") if isinstance(settings, dict) else getattr(settings, "base_url", None)
    if url:
        return str(url)
    try:  # wandb's own resolution: WANDB_BASE_URL, `wandb login --host`'s settings file; starts no process
        return wandb_internals.base_url()
    except Exception:  # W&B's private lookup changed or failed: its documented defaults
        return os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"


class WandbLogger(_ServerLogging, _PLWandbLogger):
    """Lightning's WandbLogger, offline unless told otherwise; ``name`` null = the run directory's name. Online
    (``offline: false``), W&B's server is checked first (``connect_timeout_s``, null: no check) and calls that fail
    later are tolerated (:class:`_ServerLogging`). When output is plain (:func:`labkit.core.console.plain`: a log
    file, a scheduler), W&B writes nothing to the console (``silent``: its lines carry colour codes even in files);
    labkit says where the run is saved instead."""

    check_args = staticmethod(schema.WandbLogger.check)  # the schema's rules: timeouts, log_model

    def __init__(self, name: str | None = None, save_dir: str = ".", offline: bool = True,
                 connect_timeout_s: float | None = CONNECT_TIMEOUT_S, log_model: bool | str = True, **kwargs: Any):
        WandbLogger.check_args(locals())
        _require("wandb", "logger=wandb")
        kwargs["log_model"] = _best_model_only(self, log_model)
        timeout = None if connect_timeout_s is None else float(connect_timeout_s)
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(name=name or Path(save_dir).name, save_dir=save_dir, offline=offline, **kwargs)
        init = lightning_internals.wandb_init_kwargs(self)  # what wandb.init will get
        if init.get("anonymous") is None:  # Lightning always passes it; wandb >= 0.19 warns it is unused
            init.pop("anonymous", None)
        mode = str(init.get("mode") or os.environ.get("WANDB_MODE") or "online").lower()
        online = not offline and mode not in ("offline", "disabled", "dryrun")
        base_url = _wandb_base_url(init) if online else None
        self._tolerate("wandb", base_url)
        if base_url is not None and timeout is not None:
            self._check_server(base_url, timeout)

    @property
    def experiment(self):
        announce = (lightning_internals.wandb_run_if_started(self) is None and rank_zero_only.rank == 0
                    and console.plain() and self._quiet_console())
        if self._server is not None and self._failure is not None:
            return DummyExperiment()
        try:
            run = super().experiment
        except Exception as e:  # any failure of an online W&B client: the run goes on (a local one raises)
            if self._server is None:
                raise
            self._failed(e)
            return DummyExperiment()
        if announce:
            self._announce(run)
        return run

    def _quiet_console(self) -> bool:
        """W&B writes nothing to the console (its lines, the exit summary included, carry colour codes even in a
        file); True when this logger is the one to say where the run is instead."""
        if getattr(self, "_quieted", False):
            return False
        self._quieted = True
        init = lightning_internals.wandb_init_kwargs(self)
        settings = init.get("settings")
        if settings is None:
            init["settings"] = {"silent": True}
        elif isinstance(settings, dict):
            settings.setdefault("silent", True)
        else:
            return False  # the user's own wandb.Settings: theirs to choose
        return True

    def _announce(self, run: Any) -> None:
        files = getattr(run, "dir", None)
        where = Path(files).parent if files else Path(self.save_dir or ".") / "wandb"
        if self._server is None:
            log.info("wandb: offline run saved in %s; upload it with: wandb sync %s", where, where)
        else:
            log.info("wandb: run %s (files in %s)", getattr(run, "url", None) or "", where)

    def log_hyperparams(self, params: Any) -> None:
        self._send("parameter sets", super().log_hyperparams, params)

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        self._send("metric batches", super().log_metrics, metrics, step)

    def finalize(self, status: str) -> None:
        self._send(None, super().finalize, status)
        self._report_unsent()


def _wandb_run_id(save_dir) -> str | None:
    """The id of the newest W&B run saved under ``<save_dir>/wandb`` (``offline-run-<time>-<id>``, ``run-<time>-<id>``)."""
    runs = sorted(Path(save_dir, "wandb").glob("*run-*-*"), key=lambda p: p.name.split("run-", 1)[-1])
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None
