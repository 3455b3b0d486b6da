"""The plan of one run, made once: the command line (or ``labkit.api.compose``) -> a frozen :class:`Plan`.

:func:`make` composes nothing and writes nothing: it takes the composed config and the command line's overrides and
checks everything that can be checked before a file exists: the log folder, the resumed run (its saved config plus
the overrides a resume may apply, its checkpoint, that no other process is writing it), the preset's required keys,
every key and value (:func:`labkit.run.validate.validate`) and the checkpoint ``init_from`` names. Entry points,
sweep jobs and the notebook API hand the plan on; nothing downstream derives any of it again, and each checkpoint
named on the command line is read here once, to check it, and once more where it is used.
"""
from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from labkit.core import checks
from labkit.core.errors import ConfigError
from labkit.core.values import resolved
from labkit.run import directory, startup
from labkit.run.startup import RESUME_DRIVING, RESUME_FIXED, covers, resume_key_allowed  # noqa: F401
from labkit.run.validate import check_required, validate

log = logging.getLogger("labkit")

NOT_RECORDED = ("resume",)  # keys of the command line that are not part of a run's settings


def override_keys(overrides: Sequence[str]) -> list[str]:
    """Dotted config keys named by command-line overrides (``task/optimizer=adam`` -> ``task.optimizer``,
    ``logger=csv`` -> ``logger``), Hydra's own and ``resume`` left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = []
    for o in OverridesParser.create().parse_overrides(list(overrides or [])):
        key = o.key_or_group.replace("/", ".")
        if key.startswith("hydra.") or key == "hydra" or key in NOT_RECORDED:
            continue
        keys.append(key)
    return keys


def setting(cfg: DictConfig, key: str):
    """The plain value of ``key`` in ``cfg`` (None when it is not there)."""
    return resolved(OmegaConf.select(cfg, key, default=None, throw_on_missing=False))


def _apply(saved: DictConfig, cfg: DictConfig, key: str) -> None:
    """The command line's value of ``key`` into a run's saved config; a group choice (``logger=csv``): its composed
    node replaces the saved one."""
    new = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    if isinstance(new, DictConfig):
        new = OmegaConf.to_container(new, resolve=False)
    with open_dict(saved):
        OmegaConf.update(saved, key, new, merge=False, force_add=True)


def _first_change(cfg: DictConfig, saved: DictConfig, overrides: Sequence[str], may_change) -> tuple | None:
    """(key, saved value, new value) of the first key the command line names that ``may_change(key)`` does not admit
    and whose value differs from the run's saved one; None when every such key only repeats the saved value."""
    for key in override_keys(overrides):
        if not may_change(key) and setting(cfg, key) != setting(saved, key):
            return key, setting(saved, key), setting(cfg, key)
    return None


# ----- the plan ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Resume:
    """``resume=...``: which run continues, from which checkpoint, and what the command line changes in it."""

    run_dir: Path
    checkpoint: Path | None  # checkpoints/last.ckpt (read once to check it); None: the run never saved one
    epochs_done: int | None  # epochs that checkpoint has completed
    changes: Mapping[str, tuple[Any, Any]]  # key -> (saved value, new value), paths.* left out
    skipped: tuple[Path, ...] = ()  # resume=true: newer runs passed over because they have no checkpoint
    finished: str | None = None  # the run has nothing left to train: says why, and nothing is written


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything a run needs to start, checked: the config (read-only), the command line's overrides, the resume and
    ``init_from`` sources, and the run directory (known once Hydra or the API has chosen it: :meth:`at`)."""

    cfg: DictConfig
    overrides: tuple[str, ...]
    resume: Resume | None = None
    init_from: Path | None = None  # the checkpoint file init_from names (a run's best, or the file itself)
    run_dir: Path | None = None
    reproduces: Path | None = None  # reproduce=<run>: the finished run this one re-runs

    def at(self, run_dir: str | Path) -> Plan:
        """This plan with its run directory (``paths.output_dir``) set."""
        run_dir = Path(run_dir)
        if self.run_dir is not None and self.run_dir.resolve() == run_dir.resolve():
            return self
        cfg = OmegaConf.create(OmegaConf.to_container(self.cfg, resolve=False))
        cfg.paths.output_dir = str(run_dir)
        OmegaConf.set_readonly(cfg, True)
        return dataclasses.replace(self, cfg=cfg, run_dir=run_dir)

    @property
    def nothing_to_do(self) -> str | None:
        """Why this plan trains nothing (a finished run resumed without a larger limit), or None."""
        return self.resume.finished if self.resume is not None else None


def make(cfg: DictConfig, overrides: Sequence[str] = ()) -> Plan:
    """The plan of a run from its composed config and the command line's overrides; raises a one-paragraph error
    (:class:`ConfigError`, :class:`labkit.run.directory.RunNotFoundError`, ...) on the first problem. Writes nothing."""
    raw = tuple(str(o) for o in overrides)
    overrides = tuple(o for o in raw if not o.startswith("hydra"))
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))  # the caller's config stays as it was
    if "hydra" in cfg:
        with open_dict(cfg):
            del cfg["hydra"]
    checks.writable_folder("paths.log_dir", cfg.paths.log_dir)
    resume = reproduces = None
    if cfg.get("resume") not in (None, False):
        if cfg.get("reproduce") not in (None, False):
            raise ConfigError("resume= and reproduce= cannot be given together: resume continues a run in its own "
                              "directory, reproduce re-runs a finished one in a new directory")
        cfg, resume = _continue(cfg, overrides)
    elif cfg.get("reproduce") not in (None, False):
        cfg, reproduces = _reproduction(cfg, overrides)
    _drop_model_init_from(cfg, resuming=resume is not None)
    if cfg.get("seed") is None:
        cfg.seed = random.randint(0, 2**31 - 1)
    if resume is None and reproduces is None:  # the run's command line, kept in config.yaml (a resume's go to
        cfg.overrides = [o for o in overrides if not o.startswith("resume=")]  # resume_history)
    if resume is not None and resume.finished:
        OmegaConf.set_readonly(cfg, True)
        return Plan(cfg, overrides, resume, run_dir=resume.run_dir)
    check_required(cfg)
    validate(cfg)
    if resume is None:  # a new run (or a reproduction) never trains into a folder that holds another run's record
        startup.check_target_folder(cfg, raw)
    # a resume from a checkpoint holds those weights already: its init_from source is not read again (it may be gone)
    init_ckpt = _init_source(cfg.get("init_from")) if resume is None or resume.checkpoint is None else None
    startup.check_before_claim(cfg)  # machine, packages, dataset files (imports torch): before the run's folder exists
    OmegaConf.set_readonly(cfg, True)
    return Plan(cfg, overrides, resume, init_ckpt, resume.run_dir if resume is not None else None, reproduces)


# what reproduce=<run> may change: where and how it runs, never what it computes
REPRODUCE_DRIVING = ("trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.strategy",
                     "trainer.enable_progress_bar", "trainer.enable_model_summary", "data.num_workers",
                     "data.eval_batch_size", "data.pin_memory", "data.persistent_workers", "data.keep_on_device",
                     "data.data_dir", "logger", "paths", "reproduce_tolerance")


def _reproduction(cfg: DictConfig, overrides: Sequence[str]) -> tuple[DictConfig, Path]:
    """The config a ``reproduce=<run>`` runs: the finished run's own (its seed included), where it runs taken from
    this command line (``paths``, devices, workers, loggers), with ``reproduces`` naming the original."""
    run_dir, _ = directory.resolve_run(cfg.reproduce, key="reproduce")
    status = directory.read_status(run_dir, strict=True)
    if status != "ok":
        raise ConfigError(f"reproduce={cfg.reproduce}: {run_dir} has not finished ({directory.METRICS_FILE} says "
                          f"{status or 'nothing'}), so it has no figures to reproduce; finish it first with "
                          f"python train.py resume={run_dir}")
    startup.check_config_unedited(run_dir, f"reproduce={cfg.reproduce}")
    saved = directory.load_config(run_dir)
    change = _first_change(cfg, saved, overrides, lambda k: k == "reproduce" or covers(REPRODUCE_DRIVING, k))
    if change is not None:  # repeating the original's own value is fine
        key = change[0]
        raise ConfigError(f"reproduce={cfg.reproduce} cannot change '{key}': a reproduction runs the original's own "
                          f"settings (it may change only {', '.join(REPRODUCE_DRIVING)}). To try other settings, start "
                          f"a new run: python train.py init_from={run_dir} {key}=...")
    for key in override_keys(overrides):
        if covers(REPRODUCE_DRIVING, key) and not covers(("paths",), key):
            _apply(saved, cfg, key)
    with open_dict(saved):
        saved.paths = OmegaConf.to_container(cfg.paths, resolve=False)  # where it runs: this command line's
        saved.pop("resume_history", None)
        saved.resume = None
        saved.reproduce = None  # the command; the record is reproduces (a later resume of this run is no reproduction)
        saved.reproduce_tolerance = cfg.get("reproduce_tolerance", 0.0)
        saved.reproduces = str(run_dir)
    return saved, run_dir


def _continue(cfg: DictConfig, overrides: Sequence[str]) -> tuple[DictConfig, Resume]:
    """The config a ``resume=...`` continues with: the run's saved config plus the command line's overrides.

    Overrides that only drive the run (``trainer.max_epochs``, ``data.num_workers``, ``logger=csv``, ...) are applied;
    any that would change the experiment itself are refused, naming the key. A run another process is writing is
    refused too."""
    run_dir, ckpt, skipped = directory.resume_target(cfg.resume, cfg.paths.log_dir)
    directory.check_unclaimed(run_dir)
    startup.check_config_unedited(run_dir, f"resume={cfg.resume}")
    saved = directory.load_config(run_dir)
    changes: dict[str, tuple[Any, Any]] = {}
    for key in override_keys(overrides):
        if not resume_key_allowed(key):
            raise ConfigError(
                f"resume={cfg.resume} cannot change '{key}': it would change the experiment itself (model, data, task, "
                f"optimizer and seed are fixed for a run), so the continued run would no longer be the one recorded in "
                f"{run_dir}. Start a new run from its weights instead: python train.py init_from={run_dir} {key}=... "
                f"(resume may change: {', '.join(RESUME_DRIVING)})")
        before = setting(saved, key)
        _apply(saved, cfg, key)
        after = setting(saved, key)
        if before != after and not key.startswith("paths."):
            changes[key] = (before, after)
    done = None
    if ckpt is not None:  # after the keys: a refused key is refused at once, without reading a checkpoint (torch)
        from labkit.core.safe_load import load_checkpoint

        # unreadable or unsafe: refused now, with the file named, before anything is written
        done = int(load_checkpoint(ckpt).get("epoch", -1)) + 1  # epochs the checkpoint has completed
    with open_dict(saved):
        saved.resume = str(run_dir)
    max_epochs = OmegaConf.select(saved, "trainer.max_epochs", default=None)
    finished = None
    if directory.read_status(run_dir, strict=True) == "ok" and done is not None and \
            isinstance(max_epochs, int) and 0 <= max_epochs <= done and \
            OmegaConf.select(saved, "trainer.max_steps", default=-1) in (-1, None):
        finished = (f"resume={cfg.resume}: the run {run_dir} has finished {done} epochs and trainer.max_epochs="
                    f"{max_epochs}, so there is nothing left to train and nothing was changed. To train it longer, "
                    f"give a larger limit, e.g. trainer.max_epochs={done + 5}")
    return saved, Resume(run_dir, ckpt, done, changes, tuple(skipped), finished)


def _drop_model_init_from(cfg: DictConfig, resuming: bool) -> None:
    """``model.init_from`` (labkit < 0.2) is refused on the command line; configs saved by those versions hold
    ``model.init_from: null`` or a path whose weights are in the run's checkpoints, and still load."""
    if "init_from" not in (cfg.get("model") or {}):
        return
    if cfg.model.init_from and not resuming:
        raise ConfigError(f"model.init_from={cfg.model.init_from} has moved to the top level: use "
                          f"init_from={cfg.model.init_from} (it works for every model and is recorded in config.yaml "
                          "and metrics.json)")
    with open_dict(cfg):
        del cfg.model["init_from"]


def source_checkpoint(source) -> Path:
    """The file ``init_from=<run dir or .ckpt or state_dict file>`` names: the file itself, or the best checkpoint of
    the run directory (not read here)."""
    p = Path(str(source)).expanduser()
    if p.is_file():
        return p
    run_dir, _ = directory.resolve_run(p, key="init_from")
    return directory.find_checkpoint(run_dir, "best")


def _init_source(source) -> Path | None:
    """:func:`source_checkpoint`, read once to check it (None when ``init_from`` is not set)."""
    if not source:
        return None
    ckpt = source_checkpoint(source)  # a source that does not exist is refused here, before torch is imported
    from labkit.core.safe_load import load_checkpoint

    load_checkpoint(ckpt)  # not a checkpoint, truncated or unsafe: refused now, naming the file
    return ckpt


# ----- a requeued job -----------------------------------------------------------------------------------------------
def continuation(plan: Plan) -> Plan | None:
    """The plan of a requeued job (SLURM, submitit), which starts again in its own directory: when that directory
    holds an unfinished run of the same experiment (a checkpoint, and a metrics.json that is missing or says
    preempted/interrupted), continue it from its last checkpoint; None when there is nothing to continue. A command
    line that asks for another experiment in that directory is refused (its settings would be silently ignored)."""
    run_dir = plan.run_dir
    startup.refuse_reuse(run_dir, plan.cfg)  # a finished (or failed) run's record is never trained over
    if not directory.is_run_dir(run_dir) or not directory.has_checkpoint(run_dir):
        return None
    status = directory.read_status(run_dir, strict=True)
    if status not in directory.UNFINISHED:
        return None
    change = _first_change(plan.cfg, directory.load_config(run_dir), plan.overrides, resume_key_allowed)
    if change is not None:
        key, old, new = change
        raise ConfigError(f"{run_dir} holds an unfinished run whose {key} is {old!r}, not {new!r}: continue it "
                          f"with python train.py resume={run_dir}, or give this experiment another directory")
    directory.check_unclaimed(run_dir)  # another process still writes it: refused before saying it continues
    log.info("%s holds this job's unfinished run (%s): continuing it from its last checkpoint", run_dir,
             status or "stopped without a record")
    cfg = OmegaConf.create(OmegaConf.to_container(plan.cfg, resolve=False))
    cfg.resume = str(run_dir)
    return make(cfg, [f"resume={run_dir}"])
