"""``train(cfg)``: the pure training function behind ``train.py`` (tests call it directly)."""
from __future__ import annotations

import logging
import random
import time
import traceback
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from labkit.core import files
from labkit.core.errors import ConfigError, LabkitError
from labkit.models._shape import count_parameters
from labkit.run import directory as runs
from labkit.run import tuning
from labkit.run.callbacks import AtomicCheckpointIO, RunCheckpoint
from labkit.run.validate import check_required, validate

log = logging.getLogger("labkit")


def _output_dir(cfg: DictConfig) -> Path:
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    probe = out / ".write_test"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"cannot write to the run directory {out} ({e.strerror}): set paths.log_dir "
                              "(or LABKIT_LOG_DIR) to a writable folder") from None
    return out


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


def build(cfg: DictConfig, apply_init_from: bool = True):
    """Build (data module, task) from a validated config, checking they fit together; ``init_from=<run or .ckpt>``
    then copies the matching weights into the task's network (skipped for a resume: its checkpoint has them)."""
    data = build_object(cfg.data)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    task = build_object(cfg.task, model=model_cfg)
    task.check_compatible(data)  # tells the data module its sampling, then checks the pair fits
    if apply_init_from and cfg.get("init_from"):
        from labkit.models.init import init_from

        task.init_from_report = init_from(task.model, cfg.init_from)
    return data, task


def _callbacks(cfg: DictConfig, task, has_logger: bool) -> list[pl.Callback]:
    cbs = []
    bar = cfg.trainer.get("enable_progress_bar", True) is not False
    for key, node in (cfg.get("callbacks") or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        if not bar and "ProgressBar" in str(node._target_):
            continue  # trainer.enable_progress_bar=false switches the bar callback off too
        if not has_logger and "LearningRateMonitor" in str(node._target_):
            continue  # logger=none: nothing to monitor into
        if key == "model_checkpoint":
            with open_dict(node):
                monitor, mode = task.monitor
                node.monitor = node.monitor or monitor
                node.mode = node.mode or mode
        cbs.append(instantiate(node))
    return cbs


def _loggers(cfg: DictConfig) -> list:
    return [build_object(n) for n in (cfg.get("logger") or {}).values()
            if isinstance(n, DictConfig) and "_target_" in n]


class NothingToResume(LabkitError):
    """``resume=`` names a finished run and no larger limit: not an error, nothing to do (train() says so and
    returns the run's metrics without writing anything)."""

    def __init__(self, message: str, run_dir: Path):
        super().__init__(message)
        self.run_dir = run_dir


# ----- continuing a run with new settings ---------------------------------------------------------
# Keys a resume may change: how long and how the run is driven, never what is being trained.
RESUME_DRIVING = ("trainer", "data.num_workers", "data.eval_batch_size", "data.pin_memory", "data.persistent_workers",
                  "data.keep_on_device", "data.data_dir", "logger", "callbacks", "paths", "test", "expected",
                  "tune_lr", "optimized_metric")
# ... except these, which change the optimization itself or which checkpoint counts as the best
RESUME_FIXED = ("trainer.accumulate_grad_batches", "trainer.gradient_clip_val", "trainer.gradient_clip_algorithm",
                "callbacks.model_checkpoint.monitor", "callbacks.model_checkpoint.mode")
NOT_RECORDED = ("resume",)  # keys of the command line that are not part of a run's settings


def _covers(prefixes, key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def resume_key_allowed(key: str) -> bool:
    return _covers(RESUME_DRIVING, key) and not _covers(RESUME_FIXED, key)


def override_keys(overrides) -> list[str]:
    """Dotted config keys named by command-line overrides (``task/optimizer=adam`` -> ``task.optimizer``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = []
    for o in OverridesParser.create().parse_overrides(list(overrides or [])):
        key = o.key_or_group.replace("/", ".")
        if key.startswith("hydra.") or key == "hydra" or key in NOT_RECORDED:
            continue
        keys.append(key)
    return keys


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def continue_config(cfg: DictConfig, overrides) -> tuple[DictConfig, Path | None, dict[str, list]]:
    """The config a ``resume=...`` continues with: the run's saved config plus the command line's overrides.

    Overrides that only drive the run (``trainer.max_epochs``, ``data.num_workers``, ``logger``, ...) are applied;
    any that would change the experiment itself raise :class:`ConfigError` naming the key. Nothing is written.
    Returns (config, checkpoint to resume from or None, {key: [old, new]} of what changed).
    """
    run_dir, ckpt = runs.resume_target(cfg.resume, cfg.paths.log_dir)
    saved = runs.load_config(run_dir)
    done = None
    if ckpt is not None:
        from labkit.core.safe_load import load_checkpoint

        # unreadable or unsafe: refused now, with the file named, before anything is written
        done = int(load_checkpoint(ckpt).get("epoch", -1)) + 1  # epochs the checkpoint has completed
    changes: dict[str, list] = {}
    for key in override_keys(overrides):
        if not resume_key_allowed(key):
            raise ConfigError(
                f"resume={cfg.resume} cannot change '{key}': it would change the experiment itself (model, data, task, "
                f"optimizer and seed are fixed for a run), so the continued run would no longer be the one recorded in "
                f"{run_dir}. Start a new run from its weights instead: python train.py init_from={run_dir} {key}=... "
                f"(resume may change: {', '.join(RESUME_DRIVING)})")
        new = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        old = OmegaConf.select(saved, key, default=None, throw_on_missing=False)
        if isinstance(new, DictConfig):  # a group choice (logger=csv): take the composed node as it is
            new = OmegaConf.to_container(new, resolve=False)
        with open_dict(saved):
            OmegaConf.update(saved, key, new, merge=False, force_add=True)
        before, after = _plain(old), _plain(OmegaConf.select(saved, key, default=None))
        if before != after and not key.startswith("paths."):
            changes[key] = [before, after]
    max_epochs = OmegaConf.select(saved, "trainer.max_epochs", default=None)
    finished = (run_dir / runs.METRICS_FILE).is_file() and \
        files.read_json(run_dir / runs.METRICS_FILE).get("status") == "ok"
    if finished and done is not None and isinstance(max_epochs, int) and 0 <= max_epochs <= done and \
            OmegaConf.select(saved, "trainer.max_steps", default=-1) in (-1, None):
        raise NothingToResume(f"resume={cfg.resume}: the run {run_dir} has finished {done} epochs and "
                              f"trainer.max_epochs={max_epochs}, so there is nothing left to train and nothing was "
                              f"changed. To train it longer, give a larger limit, e.g. "
                              f"trainer.max_epochs={done + 5}", run_dir)
    with open_dict(saved):
        saved.resume = str(run_dir)
    return saved, ckpt, changes


def _resolve_init_from(cfg: DictConfig, read_source: bool = True) -> Path | None:
    """The checkpoint that ``init_from=<run dir or .ckpt>`` names, checked before anything is written.
    ``read_source=False`` (a resume from a checkpoint, which holds those weights already): not read at all, so a run
    whose source has since been moved or deleted still resumes."""
    if "init_from" in (cfg.get("model") or {}):
        if cfg.model.init_from and not cfg.get("resume"):
            raise ConfigError(f"model.init_from={cfg.model.init_from} has moved to the top level: use "
                              f"init_from={cfg.model.init_from} (it works for every model and is recorded in config.yaml "
                              "and metrics.json)")
        with open_dict(cfg):  # configs saved by older labkit versions: the weights are in the run's checkpoints
            del cfg.model["init_from"]
    source = cfg.get("init_from")
    if not source or not read_source:
        return None
    from labkit.core.safe_load import load_checkpoint
    from labkit.models.init import source_checkpoint

    ckpt = source_checkpoint(source)
    load_checkpoint(ckpt)  # not a checkpoint, truncated or unsafe: refused now, naming the file
    return ckpt


def prepare(cfg: DictConfig, overrides=None) -> tuple[DictConfig, Path | None, dict[str, list]]:
    """Everything that can be checked before a file is written: the resumed config and its changes, the seed,
    the config's keys and values, and ``init_from``. Returns (config, checkpoint to resume from, changes)."""
    resume_ckpt, changes = None, {}
    if cfg.get("resume"):
        cfg, resume_ckpt, changes = continue_config(cfg, _hydra_overrides() if overrides is None else overrides)
    if cfg.get("seed") is None:
        with open_dict(cfg):
            cfg.seed = random.randint(0, 2**31 - 1)
    check_required(cfg)
    validate(cfg)
    _resolve_init_from(cfg, read_source=resume_ckpt is None)
    return cfg, resume_ckpt, changes


def _record_resume(cfg: DictConfig, resume_ckpt: Path | None, changes: dict[str, list], run_dir: Path) -> None:
    """Print what a resume changed and keep it in config.yaml's ``resume_history``."""
    for key, (old, new) in changes.items():
        log.info("resuming with %s: %s -> %s", key, old, new)
    if resume_ckpt is None:
        log.warning("%s has no checkpoint yet: training it from the start", run_dir)
    else:
        log.info("resuming %s from %s", run_dir, runs.relative_to_run(resume_ckpt, run_dir))
    entry = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "from": runs.relative_to_run(resume_ckpt, run_dir),
             "changes": {k: {"from": v[0], "to": v[1]} for k, v in changes.items()}}
    with open_dict(cfg):
        cfg.resume_history = [*(_plain(cfg.get("resume_history")) or []), entry]


def hyperparameters(cfg: DictConfig, overrides) -> dict[str, Any]:
    """What tells runs apart in TensorBoard's HParams tab and in comparisons: the overrides and the key settings."""
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
    for key in override_keys(overrides):
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        hp[key] = value if not isinstance(value, DictConfig) else short(value.get("_target_")) or "…"
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hp.items() if v is not None}


def _log_final(loggers, hp: dict[str, Any], metrics: dict[str, Any]) -> None:
    """TensorBoard's HParams tab: the run's key settings beside its final metrics (the whole config and the final
    figures go to every logger through :class:`labkit.tracking.loggers.RunSummary`)."""
    finals = {f"hparams/{k}": float(v) for k, v in metrics.items()
              if k.startswith(("test/", "val/", "best_")) and isinstance(v, (int, float)) and not isinstance(v, bool)}
    for lg in loggers:
        try:
            if type(lg).__name__ == "TensorBoardLogger":
                lg.log_hyperparams(hp, metrics=finals or {"hparams/none": 0.0})
                lg.save()
        except Exception as e:  # a logger's failure must not cost the run its metrics.json
            log.warning("could not log hyper-parameters to %s: %s", type(lg).__name__, e)


def _recorded_best(out: Path) -> Path | None:
    """The best checkpoint file that the run's metrics.json names (:func:`labkit.run.directory.recorded_best`), if it
    exists; None also when metrics.json cannot be read (a resume never fails for the sake of this protection)."""
    try:
        path = runs.recorded_best(out)
    except (OSError, ValueError):
        return None
    return path.resolve() if path is not None and path.is_file() else None


def _drop_superseded(recorded: Path | None, trainer: pl.Trainer, out: Path) -> None:
    """After a resume has rewritten metrics.json: delete the finished run's best checkpoint that was kept while
    training (:class:`labkit.run.callbacks.RunCheckpoint` ``keep``) if no checkpoint callback holds it any longer."""
    if recorded is None or not recorded.is_file():
        return
    held = set()
    for cb in trainer.checkpoint_callbacks:
        held.update(Path(p).resolve() for p in [getattr(cb, "best_model_path", ""), getattr(cb, "last_model_path", ""),
                                                *getattr(cb, "best_k_models", {})] if p)
    if recorded not in held:
        recorded.unlink()
        log.info("removed %s: superseded by this run's best checkpoint", runs.relative_to_run(recorded, out))


def _compare_expected(cfg: DictConfig, metrics: dict[str, Any]) -> None:
    """A preset's expected figures (the notes' result) beside this run's."""
    for key, want in (cfg.get("expected") or {}).items():
        got = metrics.get(key)
        shown = f"{got:.4f}" if isinstance(got, (int, float)) else "not measured"
        log.info("%s: notes: %s, this run: %s", key, want, shown)


def train(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train, test the best checkpoint and write config.yaml, metrics.json and checkpoints to the run dir.

    ``overrides`` are the command line's (taken from Hydra when None): with ``resume=...`` they are applied on
    top of the run's saved config (see :func:`continue_config`). Returns the metrics dict that is also written
    to ``<run dir>/metrics.json``.
    """
    start = time.time()
    if overrides is None:  # the command line's (Hydra), or those a notebook's labkit.cli.api.compose recorded
        overrides = _hydra_overrides() or [str(o) for o in (cfg.get("overrides") or [])]
    try:
        cfg, resume_ckpt, changes = prepare(cfg, overrides)
    except NothingToResume as e:
        log.warning("%s", e)
        return files.read_json(e.run_dir / runs.METRICS_FILE)
    except Exception as e:
        e.labkit_refused = True  # nothing was written: record_failure must not write either
        raise
    if not cfg.get("resume"):
        with open_dict(cfg):  # the command line of the run, kept in config.yaml (a resume's are in resume_history)
            cfg.overrides = [o for o in overrides if not o.startswith("hydra") and not o.startswith("resume=")]
    pl.seed_everything(cfg.seed, workers=True)  # before building: the network's initial weights depend on it
    data, task = build(cfg, apply_init_from=resume_ckpt is None)
    init_report = getattr(task, "init_from_report", None)
    out = _output_dir(cfg)
    for folder in (out, out / runs.CKPT_DIR):  # temporaries that a killed writer left behind
        files.clean_stale_temporaries(folder)
    if cfg.get("resume"):
        _record_resume(cfg, resume_ckpt, changes, out)
    runs.save_config(cfg, out)

    loggers = _loggers(cfg)
    trainer: pl.Trainer = build_object(cfg.trainer, callbacks=_callbacks(cfg, task, bool(loggers)),
                                       logger=loggers or False, plugins=[AtomicCheckpointIO()])
    recorded_best = _recorded_best(out) if cfg.get("resume") else None
    if recorded_best is not None:  # a killed resume must leave metrics.json's checkpoint in place
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, RunCheckpoint):
                cb.keep.add(str(recorded_best))
    tuning.maybe_tune_lr(cfg, trainer, task, data, out)  # tune_lr=true: Lightning's lr finder (labkit/tuning.py)
    trainer.fit(task, datamodule=data, ckpt_path=str(resume_ckpt) if resume_ckpt else None)

    ckpt_cb = next((c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)), trainer.checkpoint_callback)
    best = getattr(ckpt_cb, "best_model_path", "") if ckpt_cb else ""
    last = out / runs.CKPT_DIR / "last.ckpt"
    metrics: dict[str, Any] = {
        "status": "ok",
        "seed": cfg.seed,
        "params": count_parameters(task.model),
        "trainable_params": count_parameters(task.model, trainable_only=True),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        # relative to the run directory, so a moved or copied run finds its own files
        "best_checkpoint": runs.relative_to_run(best, out),
        "last_checkpoint": runs.relative_to_run(last, out) if last.exists() else None,
        "overrides": list(cfg.get("overrides") or []),
    }
    if cfg.get("init_from"):
        metrics["init_from"] = str(cfg.init_from)
        if init_report:
            metrics["init_from_layers"] = {k: len(v) for k, v in init_report.items()}
    if ckpt_cb is not None and ckpt_cb.best_model_score is not None:
        metrics[f"best_{ckpt_cb.monitor}"] = float(ckpt_cb.best_model_score)
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))})
    if cfg.get("test", True):
        use_best = bool(best) and not trainer.fast_dev_run
        results = trainer.test(task, datamodule=data, ckpt_path=best if use_best else None)
        for k, v in (results[0] if results else {}).items():
            metrics[k] = float(v)
        if "test/acc" in metrics:
            metrics["test/error"] = 100.0 * (1.0 - metrics["test/acc"])
        if any(k.startswith("retrieval/") for k in getattr(task, "headline_metrics", ())):
            metrics.update(retrieval_figures(task, data))
    metrics["wall_time_s"] = time.time() - start
    if cfg.get("resume"):
        metrics["resumes"] = len(cfg.get("resume_history") or [])
    files.write_json(out / runs.METRICS_FILE, metrics)
    _drop_superseded(recorded_best, trainer, out)
    hp = hyperparameters(cfg, list(cfg.get("overrides") or []) + [f"{k}={v[1]}" for k, v in changes.items()])
    _log_final(loggers, hp, metrics)
    _compare_expected(cfg, metrics)
    log.info("run directory: %s", out)
    return metrics


def retrieval_figures(task, data) -> dict[str, float]:
    """Test images as queries against the training images in the task's embedding space (the retrieval
    report's precision@1 and MAP@R, see :mod:`labkit.evaluation.retrieval`), beside the same search on raw
    pixels: what a metric-learning run has learned, in its metrics.json and its sweep's summary."""
    from labkit.evaluation.embed import extract_all
    from labkit.evaluation.retrieval import retrieval_metrics

    if getattr(data, "label_kind", "class") != "class" or not callable(getattr(task, "embed", None)):
        return {}
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


def _hydra_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:
        return []


def record_failure(cfg: DictConfig, exc: BaseException) -> None:
    """Record a failed job without losing anything: ``metrics.json`` with status 'failed' for a new run (used by
    sweeps); for a run that already has results (a failed resume), ``resume_failed.json`` beside them instead."""
    if getattr(exc, "labkit_refused", False):
        return  # refused before anything was written (bad resume/init_from/config): write nothing now either
    try:
        out = Path(cfg.paths.output_dir)
        if not out.is_dir():
            return  # the failure came before the run directory existed: nothing to record, nothing to create
        last = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        entry = {"status": "failed", "error": f"{type(exc).__name__}: {last}", "overrides": _hydra_overrides(),
                 "time": time.strftime("%Y-%m-%d %H:%M:%S"), "traceback": traceback.format_exc()}
        if (out / runs.METRICS_FILE).exists() or cfg.get("resume"):
            failed = out / "resume_failed.json"
            history = files.read_json(failed).get("attempts", []) if failed.exists() else []
            files.write_json(failed, {"attempts": history + [entry]})
        else:
            files.write_json(out / runs.METRICS_FILE, entry)
    except Exception:  # the original error matters more
        log.exception("could not record the failure")
