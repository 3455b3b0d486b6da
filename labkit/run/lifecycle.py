"""The life of one run: ``train(plan)`` claims the run directory, then builds, attaches, fits, tests and records.

Every entry point (train.py, each sweep job, ``labkit.api.train``) goes through :func:`execute`, the one wrapper
that makes the plan when it was not made yet and records a failure the same way for all of them
(:mod:`labkit.run.records`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ProgressBar

from labkit.callbacks import AtomicCheckpointIO, Interrupted, Preempted, RunClock, RunSummary, SignalsAsSigterm
from labkit.core.errors import ConfigError, LabkitError
from labkit.run import directory, pictures, ranks, records, tuning, validate
from labkit.run import plan as planning
from labkit.run.plan import Plan

log = logging.getLogger("labkit")


def execute(job: Plan | DictConfig, overrides: Sequence[str] | None = None, discard_refused: bool = False) \
        -> dict[str, Any]:
    """Plan (unless ``job`` is a plan already) and train: :func:`prepare`, then :func:`train`; a job refused before it
    started is recorded by :func:`labkit.run.records.refused`, one that fails later by :func:`labkit.run.records.failed`.
    A job that finds its directory holding its own unfinished run (a requeued SLURM or submitit job) continues it."""
    return train(prepare(job, overrides, discard_refused), discard_refused)


def prepare(job: Plan | DictConfig, overrides: Sequence[str] | None = None, discard_refused: bool = False) -> Plan:
    """The plan :func:`train` runs: ``job``'s (made from its config when it is none yet), at its directory, continuing
    the unfinished run it finds there (a requeued job); a refusal here is recorded (:func:`labkit.run.records.refused`).

    ``overrides``: the command line's (default: those ``labkit.api.compose`` recorded in the config).
    ``discard_refused``: a refused single run removes the folder Hydra made for it (holding only Hydra's own
    record), instead of recording the refusal there: a refused start leaves no run folder (a sweep job keeps its
    folder, whose metrics.json the sweep summary shows)."""
    cfg = job.cfg if isinstance(job, Plan) else job
    if isinstance(job, Plan):
        overrides = list(job.overrides)
    elif overrides is None:
        overrides = list(cfg.get("overrides") or [])
    overrides = list(overrides)
    try:
        plan = job if isinstance(job, Plan) else planning.make(job, overrides)
        if plan.run_dir is None:
            plan = plan.at(cfg.paths.output_dir)
        if plan.resume is None:
            plan = planning.continuation(plan) or plan
    except Exception as e:
        records.refused(cfg, e, overrides, discard=discard_refused)
        raise
    return plan


def recorded_failure(plan: Plan, e: BaseException, epoch: int, run_dir: Path) -> BaseException:
    """Record a session that failed or was stopped on purpose (:func:`labkit.run.records.failed`); returns what to
    raise: a scheduler's stop as its one paragraph (not Lightning's bare SystemExit, exit status 0), else ``e``."""
    stopped = stopped_by(e, epoch, run_dir)
    records.failed(plan, stopped or e)
    if isinstance(stopped, Preempted):
        stopped.__suppress_context__ = True
        return stopped
    return e


def train(plan: Plan, discard_refused: bool = False) -> dict[str, Any]:
    """Train, test the best checkpoint and record the run (returns metrics.json); all that can refuse it is built first."""
    if plan.nothing_to_do:
        log.warning("%s", plan.nothing_to_do)
        return directory.read_metrics(plan.run_dir, strict=True)
    clock = RunClock()
    try:
        data, task, init_report = build(plan)  # a model that cannot work on the data is refused here, nothing written
        loggers = build_loggers(plan)  # a package missing, a tracking server that does not answer: refused here too
    except Exception as e:
        records.refused(plan.cfg, e, plan.overrides, discard=discard_refused)
        raise
    if not (me := ranks.current(plan.cfg.trainer)).is_zero:  # another rank, on any node: rank 0's folder, no records
        return train_beside_rank_zero(plan, me, data, task, clock, loggers, discard_refused)
    with directory.claim(plan.run_dir, me) as run_dir:
        try:
            trainer, loggers = attach(plan, task, clock, loggers)
            records.start(plan, trainer, data, loggers)
            kept = protect_recorded_best(plan, trainer)
            figures = fit(plan, trainer, task, data) | test(plan, trainer, task, data)  # (fit first, then test)
            figures = records.metrics(plan, trainer, task, figures, init_report, clock)
            records.report(loggers, plan, figures)
            to_loggers(loggers, plan, trainer, task, data)
            records.finish(run_dir, figures)
        except BaseException as e:  # failed, or stopped on purpose (a scheduler's SIGTERM, Ctrl-C)
            raise recorded_failure(plan, e, clock.epoch, run_dir)  # noqa: B904  (e itself, its own cause kept)
        records.drop_superseded(kept, trainer, run_dir)
    return figures


def train_beside_rank_zero(plan: Plan, me: ranks.Ranks, data, task, clock: RunClock, loggers,
                           discard_refused: bool = False) -> dict[str, Any]:
    """A DDP rank other than global rank 0: trains in rank 0's run directory (once rank 0 has claimed it, or one
    paragraph when it does not show up) and records nothing of the run. When rank 0 does not show up in a folder
    this process named itself (a single run, no ``hydra.run.dir`` given), the folder Hydra made for it is removed
    if it holds nothing else (:func:`labkit.run.records.discard_folder`)."""
    try:
        with directory.claim(plan.run_dir, me):
            trainer, loggers = attach(plan, task, clock, loggers)
            figures = fit(plan, trainer, task, data)
            figures |= test(plan, trainer, task, data)
    except directory.RankZeroAbsentError:
        if discard_refused and not directory.run_dir_given():
            records.discard_folder(plan.run_dir)
        raise
    return figures


def to_loggers(loggers, plan: Plan, trainer: pl.Trainer, task, data) -> None:
    """The figures written during training and the best model to the run's loggers (:mod:`labkit.run.pictures`);
    a logger's failure is a warning, never the run's."""
    if not loggers or trainer.global_rank != 0:
        return
    ckpt_cb = records.best_checkpoint_callback(trainer)
    try:
        pictures.at_end_of_training(loggers, plan.run_dir, task, data, ckpt_cb.best_model_path if ckpt_cb else None,
                                    int(trainer.global_step))
    except Exception as e:  # trained and recorded already: a logger's failure must not fail the run
        log.warning("could not send the figures and the model to the loggers: %s: %s", type(e).__name__, e)


def stopped_by(e: BaseException, epoch: int | None, run_dir: Path) -> Preempted | Interrupted | None:
    """What stopped a run that did not fail (None for a failure): a scheduler's SIGTERM or SIGUSR1, which Lightning
    turns into a SIGTERMException at the next step (preempted), or an exit request such as Ctrl-C or a launcher's
    requeue (interrupted: recorded, and the original KeyboardInterrupt/SystemExit goes on as it was)."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    if isinstance(e, Exception) and not isinstance(e, SIGTERMException):
        return None
    kind, how = (Preempted, "a scheduler's SIGTERM/SIGUSR1") if isinstance(e, SIGTERMException) else \
        (Interrupted, type(e).__name__)
    kept = ("its checkpoints stay, and it continues from its last checkpoint (the step it stopped at, when it could "
            "save one)" if directory.has_checkpoint(run_dir)
            else "it had saved no checkpoint yet, so it trains again from the start")
    return kind(f"the run was stopped by {how} during epoch {epoch}; {kept} with: python train.py resume={run_dir}",
                epoch=epoch)


# ----- the steps ----------------------------------------------------------------------------------------------------
def build(plan: Plan):
    """(data module, task, init_from report or None): seeded, built from the plan's config and checked to fit together
    once (``task.check_compatible``); ``init_from`` copies the matching weights into the fresh network."""
    cfg = plan.cfg
    validate.check_machine(cfg.trainer)  # a GPU asked for where there is none: refused here, on the training machine
    pl.seed_everything(cfg.seed, workers=True)  # before building: the initial weights depend on it
    data = build_object(cfg.data)
    task = build_object(cfg.task, model=OmegaConf.to_container(cfg.model, resolve=True))
    task.check_compatible(data)  # tells the data module its sampling, then checks the pair fits
    data.check_available()  # its files are there (or will be downloaded)
    data.check_sizes()  # and data.val_size leaves images to train on (where a file's header says how many)
    init_report = None
    if plan.init_from is not None:
        from labkit.models.init import init_from

        init_report = init_from(task.model, plan.init_from)
    return data, task, init_report


def build_loggers(plan: Plan) -> list:
    """The config's loggers; a resumed run's MLflow and W&B loggers continue the runs it logged into before (their ids
    recorded in provenance.json, :func:`labkit.run.startup.continued_logger_args`), so one labkit run is one run in
    each tracking UI."""
    from labkit.run.startup import continued_logger_args

    recorded = plan.resume is not None
    out = []
    for n in (plan.cfg.get("logger") or {}).values():
        if not isinstance(n, DictConfig) or "_target_" not in n:
            continue
        extra = continued_logger_args(plan.run_dir, n) if recorded else {}
        out.append(build_object(n, **extra))
    return out


def attach(plan: Plan, task, clock: RunClock, loggers: list | None = None) -> tuple[pl.Trainer, list]:
    """The Trainer with the config's loggers (:func:`build_loggers` unless given) and callbacks (the checkpoint
    callback monitoring the task's metric), the run clock and atomic checkpoint writes."""
    cfg = plan.cfg
    loggers = build_loggers(plan) if loggers is None else loggers
    callbacks: list[pl.Callback] = [clock, SignalsAsSigterm()]
    bar = cfg.trainer.get("enable_progress_bar", True) is not False
    for key, node in (cfg.get("callbacks") or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        extra = {}
        if key == "model_checkpoint":  # the checkpoint that keeps the best epoch: by the task's metric unless set
            monitor, mode = task.monitor
            extra = {"monitor": node.get("monitor") or monitor, "mode": node.get("mode") or mode}
        callback = instantiate(node, **extra)
        if not bar and isinstance(callback, ProgressBar):
            continue  # trainer.enable_progress_bar=false switches the bar callback off too
        if not loggers and isinstance(callback, LearningRateMonitor):
            continue  # logger=none: nothing to monitor into
        if isinstance(callback, RunSummary):
            callback.config_of = saved_config  # the run folder's config, which it sends to the loggers
        callbacks.append(callback)
    trainer = build_trainer(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()])
    return trainer, loggers


def saved_config(run_dir) -> DictConfig | None:
    """The config saved in a run folder (:func:`labkit.run.directory.load_config`), None for a folder that holds no
    run: what :class:`labkit.callbacks.RunSummary` sends to the loggers."""
    return directory.load_config(run_dir) if directory.is_run_dir(run_dir) else None


def build_trainer(node: DictConfig, **kwargs) -> pl.Trainer:
    """The Trainer; settings Lightning refuses (a strategy name, a device list it cannot use) are one
    :class:`ConfigError` with Lightning's reason and the trainer's hardware settings, not Hydra's 'Error in call to
    target' with the reason three causes down (and recorded so in a failed run's metrics.json)."""
    try:
        return build_object(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__ or e
        shown = ", ".join(f"trainer.{k}={node.get(k)}" for k in ("accelerator", "devices", "num_nodes", "strategy",
                                                                  "precision") if k in node)
        raise ConfigError(f"Lightning refused the trainer settings ({shown}): {cause}") from e


def protect_recorded_best(plan: Plan, trainer: pl.Trainer) -> Path | None:
    """A resume keeps the checkpoint its finished run's metrics.json names until it has written its own record (a
    resume killed half-way leaves a record whose checkpoint exists); returns that file."""
    kept = records.recorded_best(plan.run_dir) if plan.resume is not None else None
    if kept is not None and isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO):
        trainer.strategy.checkpoint_io.keep.add(str(kept))  # ModelCheckpoint deletes the checkpoints it replaces there
    return kept


def fit(plan: Plan, trainer: pl.Trainer, task, data) -> dict[str, float]:
    """The learning-rate finder when asked (``tune_lr=true``, recorded in config.yaml), then ``trainer.fit`` from
    the resume's checkpoint or from scratch; returns the last train/val figures."""
    lr = tuning.maybe_tune_lr(plan.cfg, trainer, task, data, plan.run_dir)
    if lr is not None and trainer.is_global_zero:
        records.tuned_lr(plan.run_dir, lr)
    ckpt = plan.resume.checkpoint if plan.resume is not None else None
    trainer.fit(task, datamodule=data, ckpt_path=str(ckpt) if ckpt else None)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))}


def test(plan: Plan, trainer: pl.Trainer, task, data) -> dict[str, float]:
    """The test split with the best checkpoint (``test=true``): the task's test metrics, the error of classifiers,
    and for embedding tasks whose headline is retrieval, the retrieval figures beside raw pixels."""
    if not plan.cfg.get("test", True):
        return {}
    ckpt_cb = records.best_checkpoint_callback(trainer)
    best = ckpt_cb.best_model_path if ckpt_cb is not None else ""
    results = trainer.test(task, datamodule=data, ckpt_path=best if best and not trainer.fast_dev_run else None)
    figures = {k: float(v) for k, v in (results[0] if results else {}).items()}
    if "test/acc" in figures:
        figures["test/error"] = 1.0 - figures["test/acc"]  # a fraction, like the accuracy
    if task.embeds and data.label_kind == "class" and any(k.startswith("retrieval/") for k in task.headline_metrics):
        figures.update(retrieval_figures(task, data))
    return figures


def retrieval_figures(task, data) -> dict[str, float]:
    """Test images as queries against the training images in the task's embedding space (the retrieval
    report's precision@1 and MAP@R, see :mod:`labkit.evaluation.retrieval`), beside the same search on raw
    pixels: what a metric-learning run has learned, in its metrics.json and its sweep's summary."""
    from labkit.evaluation.embed import extract_all
    from labkit.evaluation.retrieval import retrieval_metrics

    fns = {"embedding": task.embed, "pixels": lambda x: x}  # one pass per split for both
    gallery, g_y = extract_all(fns, data, "train", module=task, desc="embedding train")
    queries, q_y = extract_all(fns, data, "test", module=task, desc="embedding test")
    learned = retrieval_metrics(gallery["embedding"], g_y, queries["embedding"], q_y)
    pixels = retrieval_metrics(gallery["pixels"], g_y, queries["pixels"], q_y)
    figures = {"retrieval/precision_at_1": learned["precision_at_1"], "retrieval/map_at_r": learned["map_at_r"],
               "retrieval/pixels_precision_at_1": pixels["precision_at_1"],
               "retrieval/pixels_map_at_r": pixels["map_at_r"]}
    log.info("retrieval (test queries, train gallery): precision@1 %.4f, MAP@R %.4f (raw pixels: %.4f, %.4f)",
             *figures.values())
    return figures


def build_object(node, **kwargs):
    """``hydra.utils.instantiate`` that re-raises labkit's own errors unwrapped, so the user sees the
    message that says what to change instead of Hydra's nested 'Error in call to target' wrappers."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None:
            if isinstance(cause, LabkitError):
                raise cause from None
            cause = cause.__cause__
        raise
