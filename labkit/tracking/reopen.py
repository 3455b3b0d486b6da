"""A finished run's loggers, opened again: :func:`reopen` (evaluate.py adds its headline figures to the same
TensorBoard folder, CSV file, MLflow run and W&B run), :func:`reopened` (the same, closed when the block ends),
:func:`send_pictures`."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

from pytorch_lightning.loggers import WandbLogger as _PLWandbLogger

from labkit.loggers.base import _reason, close
from labkit.loggers.mlflow import MLFlowLogger
from labkit.loggers.wandb import _wandb_run_id

log = logging.getLogger("labkit")



def reopen(run_dir, cfg) -> list:
    """The loggers a run was trained with (``cfg.logger`` of its config.yaml), opened again to add figures to the same
    records: TensorBoard's folder and the CSV file of the run, its MLflow run (the id its provenance.json records,
    else the newest MLflow run tagged with the run directory) and its W&B run (resumed by id; offline, a new piece
    that ``wandb sync`` merges). A logger that cannot be opened (package missing, tracking server down, run not
    found) is a warning and is left out: what the caller wrote is kept whatever the loggers do."""
    from hydra.utils import get_class, instantiate
    from omegaconf import DictConfig

    from labkit.run import directory

    recorded: dict[str, str] = {}
    for session in directory.read_provenance(run_dir).get("sessions") or []:
        recorded.update(session.get("loggers") or {})  # the last session that finished names the run of its figures
    out = []
    for key, node in (cfg.get("logger") or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        try:
            cls = get_class(str(node._target_))
            extra = {}
            if issubclass(cls, _PLWandbLogger):
                run_id = recorded.get(cls.__name__) or _wandb_run_id(node.get("save_dir") or run_dir)
                if run_id is None:
                    raise LookupError(f"no W&B run under {node.get('save_dir') or run_dir}/wandb")
                extra = {"id": run_id}
            lg = instantiate(node, **extra)
            if isinstance(lg, MLFlowLogger) and lg.continue_run(recorded.get(cls.__name__)) is None:
                raise LookupError(f"no MLflow run of experiment {node.get('experiment_name')!r} is tagged "
                                  f"run_dir={Path(run_dir).resolve()}")
            out.append(lg)
        except Exception as e:  # any logger that cannot be reopened: its figures stay in the run folder
            what = e.__cause__ if e.__cause__ is not None and "instantiat" in type(e).__name__.lower() else e
            log.warning("logger.%s: could not open the run's %s logger again (%s): its figures stay in the run's own "
                        "records only", key, key, _reason(what))
    return out


@contextlib.contextmanager
def reopened(run_dir, cfg) -> Iterator[list]:
    """:func:`reopen`'s loggers for the block, each closed (:func:`labkit.loggers.close`) when it ends, however it
    ends; a logger that cannot be closed is a warning."""
    loggers = reopen(run_dir, cfg)
    try:
        yield loggers
    finally:
        for lg in loggers:
            try:
                close(lg)
            except Exception as e:  # closing a logger must not fail the command that wrote its files already
                log.warning("could not close the %s logger: %s", type(lg).__name__, _reason(e))


def send_pictures(run_dir, cfg, pictures: dict[str, Path], step: int = 0, what: str = "figures") -> dict[str, int]:
    """``pictures`` (``{"predictions/<time>/predictions.png": path}``) to the loggers the run ``run_dir`` was trained
    with (``cfg``: its config.yaml), opened again with :func:`reopen` and closed after: TensorBoard images, artifacts
    of its MLflow run, W&B images (:func:`labkit.run.pictures.send_figures`). Returns how many each logger got; a
    logger that cannot be opened or reached is a warning, the files stay in the run directory whatever happens."""
    from labkit.run.pictures import send_figures

    if not pictures or not cfg.get("logger"):
        return {}
    sent: dict[str, int] = {}
    with reopened(run_dir, cfg) as loggers:
        try:
            sent = send_figures(loggers, pictures, step=step)
        except Exception as e:  # a logger's failure must not fail the command that drew the pictures
            log.warning("could not send the %s to the run's loggers (%s); they stay in %s", what, _reason(e), run_dir)
    if any(sent.values()):
        log.info("the run's loggers got the %s: %s", what, ", ".join(
            f"{n} to {name.removesuffix('Logger')}" for name, n in sent.items()))
    return sent
