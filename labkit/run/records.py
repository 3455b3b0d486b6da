"""What a run records about itself: ``config.yaml`` (with the ``resume_history``), ``metrics.json`` (with totals over
all sessions), the failure records, and the final figures the loggers receive.

One rule for failures, whoever started the run (train.py, a sweep job, the notebook API):
- refused before it started (its plan could not be made): a new run whose directory exists (a sweep job's, made by
  Hydra) gets ``metrics.json`` with ``status: failed`` and the error; a run being resumed is left exactly as it was;
- failed while running: a new run gets ``status: failed``; a resume gets an entry in ``resume_failed.json`` and its
  finished ``metrics.json`` is kept.
``metrics.json`` is the last file a session writes, so a run never says both "ok" and "failed" about one session.
"""
from __future__ import annotations

import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

from labkit.core import files
from labkit.core.errors import RunStopped
from labkit.core.values import resolved
from labkit.run import directory, provenance, ranks, startup
from labkit.run.plan import Plan, override_keys

log = logging.getLogger("labkit")


# ----- config.yaml --------------------------------------------------------------------------------------------------
def start(plan: Plan, trainer, data, loggers=()) -> None:
    """Before training: remove what killed writers left, say what a resume changes, write ``config.yaml`` and this
    session's ``provenance.json`` entry (code, libraries, machine, data fingerprints)."""
    run_dir = plan.run_dir
    for folder in (run_dir, run_dir / directory.CKPT_DIR):
        files.clean_stale_temporaries(folder)
    cfg = plan.cfg
    if plan.resume is not None:
        resume = plan.resume
        for skipped in resume.skipped:
            log.info("resume=true: skipped %s (it has no checkpoint to resume)", skipped.name)
        for key, (old, new) in resume.changes.items():
            log.info("resuming with %s: %s -> %s", key, _brief(old), _brief(new))
        if resume.checkpoint is None:
            log.warning("%s has no checkpoint yet: training it from the start", run_dir)
        else:
            log.info("resuming %s from %s", run_dir, directory.relative_to_run(resume.checkpoint, run_dir))
        entry = {"time": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "from": directory.relative_to_run(resume.checkpoint, run_dir),
                 "changes": {k: {"from": v[0], "to": v[1]} for k, v in resume.changes.items()}}
        container = OmegaConf.to_container(cfg, resolve=False)
        container["resume_history"] = [*(resolved(cfg.get("resume_history")) or []), entry]
        cfg = OmegaConf.create(container)
    directory.save_config(cfg, run_dir)
    provenance.start(run_dir, trainer, data, OmegaConf.select(plan.cfg, "paths.cache_dir", default=None))
    # the config it trains with (its sha256), and the tracking runs it logs into (MLflow's id: a resume continues it)
    ids = startup.logger_runs(loggers)
    provenance.note(run_dir, **{startup.DIGEST_KEY: directory.keep_trained_config(run_dir)}, **({"loggers": ids} if ids else {}))


def _brief(value) -> str:
    """A setting as a person reads it in one line: a group's nodes by name (``logger=many``: tensorboard, csv, mlflow,
    wandb), a node by its class, anything else as it is."""
    if isinstance(value, dict):
        if "_target_" in value:
            return str(value["_target_"]).rsplit(".", 1)[-1]
        if value and all(isinstance(v, dict) for v in value.values()):
            return ", ".join(str(k) for k in value)
        if not value:
            return "none"
    return str(value)


def tuned_lr(run_dir: Path, lr: float) -> None:
    """``tune_lr=true`` trained with the finder's learning rate: ``config.yaml`` says so."""
    cfg = directory.load_config(run_dir)
    cfg.task.optimizer.lr = float(lr)
    directory.save_config(cfg, run_dir)
    provenance.note(run_dir, **{startup.DIGEST_KEY: directory.keep_trained_config(run_dir)})


# ----- metrics.json -------------------------------------------------------------------------------------------------
def previous_total(run_dir: Path) -> float:
    """The wall time a finished run's metrics.json recorded (0 when it has none)."""
    value = directory.read_metrics(run_dir).get("wall_time_s")
    return float(value) if isinstance(value, (int, float)) else 0.0


def metrics(plan: Plan, trainer, task, figures: dict[str, float], init_report: dict | None, clock) -> dict[str, Any]:
    """metrics.json of a finished session: status, seed, sizes, checkpoints (relative), ``figures`` (the last
    train/val metrics, the test figures), and the wall time of this session and of all the run's sessions."""
    from labkit.models._shape import count_parameters

    cfg, run_dir = plan.cfg, plan.run_dir
    ckpt_cb = best_checkpoint_callback(trainer)
    best = ckpt_cb.best_model_path if ckpt_cb is not None else ""
    last = directory.last_checkpoint(run_dir)
    out: dict[str, Any] = {
        "status": "ok",
        "seed": cfg.seed,
        "params": count_parameters(task.model),
        "trainable_params": count_parameters(task.model, trainable_only=True),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        # relative to the run directory, so a moved or copied run finds its own files
        "best_checkpoint": directory.relative_to_run(best, run_dir),
        "last_checkpoint": directory.relative_to_run(last, run_dir) if last.exists() else None,
        "overrides": list(cfg.get("overrides") or []),
    }
    if cfg.get("init_from"):
        out["init_from"] = str(cfg.init_from)
        if init_report:
            out["init_from_layers"] = {k: len(v) for k, v in init_report.items()}
    if ckpt_cb is not None and ckpt_cb.best_model_score is not None:
        out[f"best_{ckpt_cb.monitor}"] = float(ckpt_cb.best_model_score)
    out.update(figures)
    # this session; all of them (a finished run's own record counts its test after the last checkpoint too)
    out["session_wall_time_s"], out["wall_time_s"] = clock.totals(previous_total(run_dir) if plan.resume else 0.0)
    if plan.resume is not None:
        out["resumes"] = len(plan.cfg.get("resume_history") or []) + 1
    if plan.reproduces is not None:
        out["reproduces"] = str(plan.reproduces)
    return out


def best_checkpoint_callback(trainer):
    """The checkpoint callback that keeps the best checkpoint by the task's monitor (None without one)."""
    return next((c for c in trainer.checkpoint_callbacks if c.monitor), trainer.checkpoint_callback)


def finish(run_dir: Path, figures: dict[str, Any]) -> None:
    """Close this session's provenance entry, then write metrics.json: the last file of a finished session."""
    provenance.finish(run_dir, "ok")
    figures[startup.DIGEST_KEY] = directory.config_digest(run_dir)  # what it trained with
    directory.write_metrics(run_dir, figures)
    log.info("run directory: %s", run_dir)


def recorded_best(run_dir: Path) -> Path | None:
    """The best checkpoint file that the run's metrics.json names, if it exists (None also when metrics.json cannot
    be read: a resume never fails for the sake of protecting it)."""
    try:
        path = directory.recorded_best(run_dir)
    except (OSError, ValueError):
        return None
    return path.resolve() if path is not None and path.is_file() else None


def drop_superseded(recorded: Path | None, trainer, run_dir: Path) -> None:
    """After a resume has rewritten metrics.json: delete the finished run's best checkpoint that was kept while
    training (:class:`labkit.callbacks.AtomicCheckpointIO` ``keep``) if no checkpoint callback holds it any longer."""
    if recorded is None or not recorded.is_file():
        return
    held = set()
    for cb in trainer.checkpoint_callbacks:
        held.update(Path(p).resolve() for p in [cb.best_model_path, cb.last_model_path, *cb.best_k_models] if p)
    if recorded not in held:
        recorded.unlink()
        log.info("removed %s: superseded by this run's best checkpoint", directory.relative_to_run(recorded, run_dir))


# ----- failures -----------------------------------------------------------------------------------------------------
def _entry(exc: BaseException, overrides: Iterable[str]) -> dict[str, Any]:
    last = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
    entry = {"status": "failed", "error": f"{type(exc).__name__}: {last}", "overrides": list(overrides),
             "time": time.strftime("%Y-%m-%d %H:%M:%S"), "traceback": traceback.format_exc()}
    if isinstance(exc, RunStopped):  # stopped on purpose (pruned, preempted): says so, with the epoch
        known = exc.status in directory.STATUSES  # a user's subclass may name its own: recorded as stopped, with it
        entry.update(status=exc.status if known else "stopped", stopped_at_epoch=exc.epoch, traceback=None)
        if not known:
            entry["stopped_as"] = str(exc.status)
    return entry


def failed(plan: Plan, exc: BaseException) -> None:
    """A session that failed while it held its run: ``status: failed`` for a new run, ``resume_failed.json`` beside
    the finished results for a resume."""
    try:
        run_dir = plan.run_dir
        entry = _entry(exc, plan.overrides)
        provenance.finish(run_dir, entry["status"])
        if plan.resume is not None or directory.has_metrics(run_dir):
            directory.add_resume_failure(run_dir, entry)
        else:
            directory.write_metrics(run_dir, entry)
    except Exception:  # the original error matters more
        log.exception("could not record the failure")


HYDRA_OWN = (".hydra", "train.log", directory.LOCK_FILE)  # what a run folder holds before its run wrote anything


def refused(cfg: DictConfig, exc: BaseException, overrides: Iterable[str], discard: bool = False) -> None:
    """A job refused before it started (its config or files are wrong): a sweep job's directory, which Hydra made,
    says so in metrics.json (the sweep summary shows it as failed, with the error); nothing else is written, and a
    run that was to be resumed stays exactly as it was. ``discard``: a single run's folder that holds only what Hydra
    wrote for this job is removed instead, so a refused start leaves no run folder."""
    if cfg.get("resume") not in (None, False) or not ranks.current(cfg.get("trainer")).is_zero:
        return  # a resume stays as it was; DDP's other ranks write nothing of the run
    try:
        out = Path(str(cfg.paths.output_dir))
    except Exception:  # no directory could be named: nothing to record
        return
    if discard:
        discard_folder(out)
        return
    if not out.is_dir() or directory.has_metrics(out) or not os.access(out, os.W_OK):
        return
    try:
        directory.write_metrics(out, {**_entry(exc, overrides), "refused": True})
    except Exception:  # recording a refusal must not hide the refusal itself
        log.exception("could not record the refusal")


def discard_folder(out: Path) -> None:
    """Remove a run folder that holds nothing but Hydra's record of this job (and empty folders a logger made)."""
    import shutil

    if not out.is_dir() or directory.is_run_dir(out):
        return
    for entry in out.iterdir():
        if entry.name not in HYDRA_OWN and not (entry.is_dir() and not any(entry.rglob("*"))):
            return  # something this job did not make: kept
    shutil.rmtree(out, ignore_errors=True)
    log.info("nothing was written: the refused run's folder %s was removed", out)


# ----- the loggers' copy of the final figures -----------------------------------------------------------------------
def hyperparameters(cfg: DictConfig, keys: Iterable[str]) -> dict[str, Any]:
    """What tells runs apart in TensorBoard's HParams tab and in comparisons: key settings plus the settings the
    command line (and each resume) named, by key (``logger`` for ``logger=csv``)."""
    def short(target):
        return str(target).rsplit(".", 1)[-1] if target else None

    hp: dict[str, Any] = {
        "model": short(OmegaConf.select(cfg, "model._target_")), "data": short(OmegaConf.select(cfg, "data._target_")),
        "task": short(OmegaConf.select(cfg, "task._target_")),
        "optimizer": short(OmegaConf.select(cfg, "task.optimizer._target_", default=None)),
        "lr": OmegaConf.select(cfg, "task.optimizer.lr", default=None),
        "batch_size": OmegaConf.select(cfg, "data.batch_size", default=None),
        "max_epochs": OmegaConf.select(cfg, "trainer.max_epochs", default=None), "seed": cfg.get("seed"),
    }
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        hp[key] = value if not isinstance(value, DictConfig) else short(value.get("_target_")) or ",".join(value.keys())
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hp.items() if v is not None}


def setting_keys(plan: Plan) -> list[str]:
    """The keys the run's command line named, then those each resume changed."""
    keys = override_keys(list(plan.cfg.get("overrides") or []))
    for entry in resolved(plan.cfg.get("resume_history")) or []:
        keys += [k for k in (entry.get("changes") or {}) if k not in keys]
    if plan.resume is not None:
        keys += [k for k in plan.resume.changes if k not in keys]
    return keys


AFTER_TEST = ("retrieval/",)  # figures of metrics.json that no Lightning hook sees (lifecycle.test computes them)
FINAL = ("test/", "val/", "best_", "retrieval/")  # the figures of metrics.json that TensorBoard's HParams tab shows


def _numbers(figures: dict[str, Any], keep) -> dict[str, float]:
    return {k: float(v) for k, v in figures.items()
            if keep(k) and isinstance(v, (int, float)) and not isinstance(v, bool)}


def report(loggers, plan: Plan, figures: dict[str, Any]) -> None:
    """The end of a run: every logger gets the final figures (:func:`send`), ``provenance.json`` the identity of each
    logger's run (MLflow's run id, W&B's: where evaluate.py sends its figures later), and the log a preset's expected
    figures beside this run's."""
    send(loggers, plan, figures, _numbers(figures, lambda k: k.startswith(AFTER_TEST)))
    versions = {}
    for lg in loggers:
        try:
            version = lg.version
        except Exception:  # a tracking server that went away: nothing to record
            continue
        if isinstance(version, (str, int)) and not isinstance(version, bool) and str(version):
            versions[type(lg).__name__] = str(version)
    if versions:
        provenance.note(plan.run_dir, loggers=versions)
    expected_figures(plan.cfg, figures)


def expected_figures(cfg, figures: dict[str, Any]) -> list[str]:
    """Log a preset's figures beside this run's: the notes' (``expected:``) and labkit's own measurement of the preset
    (``measured:``, with ``where:`` saying on which files, epochs and seed), each apart from the other; returns the lines."""
    expected = dict(cfg.get("expected") or {})
    measured = dict(cfg.get("measured") or {})
    where = measured.pop("where", None)
    lines = []
    for key in list(dict.fromkeys([*expected, *measured])):
        got = figures.get(key)
        parts = ([f"notes: {expected[key]}"] if key in expected else []) + (
            [f"labkit measured: {measured[key]}" + (f" ({where})" if where else "")] if key in measured else [])
        parts.append(f"this run: {got:.4f}" if isinstance(got, (int, float)) else "this run: not measured")
        lines.append(f"{key}: " + ", ".join(parts))
        log.info("%s", lines[-1])
    return lines


def send(loggers, plan: Plan, figures: dict[str, Any], new: dict[str, float], params: bool = True) -> None:
    """The loggers' copy of a run's final figures, at the end of training (:func:`report`) and after evaluate.py.

    TensorBoard's HParams tab: the run's key settings beside its final figures (the ``test/``, ``val/``, ``best_`` and
    ``retrieval/`` ones of ``figures``, and ``new``). Every logger: ``new`` as ``final/<key>`` metrics, the figures no
    Lightning hook sent (RunSummary sent the test metrics themselves). ``params``: MLflow's params and W&B's config
    also get the provenance (what produced the run; sent once, at the end of training). A logger's failure is a
    warning: it must not cost the run its records."""
    hp = hyperparameters(plan.cfg, setting_keys(plan))
    prov = provenance.summary(provenance.latest(plan.run_dir))
    hp.update({f"provenance/{k}": prov[k] for k in ("code.commit", "machine.accelerator") if k in prov})
    finals = {f"hparams/{k}": v for k, v in _numbers(figures, lambda k: k.startswith(FINAL)).items()}
    finals.update({f"hparams/{k}": v for k, v in new.items()})
    for lg in loggers:
        try:
            if type(lg).__name__ == "TensorBoardLogger":
                lg.log_hyperparams(hp, metrics=finals or {"hparams/none": 0.0})
                lg.save()
            elif params:  # MLflow params, W&B config: what produced the run
                lg.log_hyperparams({f"provenance/{k}": v for k, v in prov.items()})
            if new:
                lg.log_metrics({f"final/{k}": v for k, v in new.items()}, step=int(figures.get("global_step") or 0))
                lg.save()
        except Exception as e:  # any logger's failure must not fail a finished run
            log.warning("could not send the final figures to %s: %s", type(lg).__name__, e)
