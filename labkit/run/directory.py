"""Run directories: unique names, relative paths, checkpoint lookup, and the one owner of a run's own files.

This module alone reads and writes the files a run keeps about itself (everything else asks it):
``config.yaml`` (:func:`save_config`, :func:`load_config`, :func:`read_saved_config`, :func:`config_digest`),
``metrics.json`` (:func:`read_metrics`, :func:`write_metrics`, whose ``status`` is one of :data:`STATUSES`),
``resume_failed.json`` (:func:`add_resume_failure`, :func:`read_resume_failures`), ``provenance.json``
(:func:`read_provenance`, :func:`write_provenance`; what goes into it is :mod:`labkit.run.provenance`'s) and the lock
``.labkit.lock`` (:func:`claim`, :func:`check_unclaimed`). :func:`is_run_dir` says whether a folder holds a run (its
``config.yaml``); :func:`has_record` whether it holds a run's record of any kind (also a sweep job refused before it
started, which has only ``metrics.json``)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Literal, get_args

from omegaconf import DictConfig, OmegaConf

from labkit.core.errors import ConfigError, LabkitError
from labkit.core.files import atomic_write_text, read_json, write_json
from labkit.run import ranks

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows: no flock; runs are not locked there)
    fcntl = None

log = logging.getLogger(__name__)


class RunNotFoundError(LabkitError, FileNotFoundError):
    """A run directory, checkpoint or resume target is missing or is not a labkit run."""


CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
RESUME_FAILED_FILE = "resume_failed.json"
PROVENANCE_FILE = "provenance.json"
DIFF_FILE = "provenance.diff"  # a dirty checkout's uncommitted changes, for the session that trained with them
TRAINED_CONFIG_FILE = ".config.trained.yaml"  # the config.yaml a session trained with, as written (for differing keys)
CKPT_DIR = "checkpoints"

#: what a run's metrics.json says about its last session: ``ok`` (finished), ``failed`` (an error, or refused before
#: it started: then also ``refused: true``), or stopped on purpose (:class:`labkit.core.errors.RunStopped`'s
#: ``status``): ``stopped``, ``pruned`` (a search's pruner), ``preempted`` (SIGTERM/SIGUSR1 of a scheduler),
#: ``interrupted`` (Ctrl-C). A folder without metrics.json has no status (a run still going, or killed).
Status = Literal["ok", "failed", "stopped", "pruned", "preempted", "interrupted"]
STATUSES: tuple[str, ...] = get_args(Status)
#: statuses of a run a requeued job continues (None: no metrics.json yet)
UNFINISHED = (None, "preempted", "interrupted")


def _unset(value) -> bool:
    return value in (None, False, "", "None", "null", "false", "False")


#: the run directory the pre-flight's plan chose for a resume (labkit.cli.app.Preflight sets it for the one command
#: it checked): ``hydra.run.dir`` takes it instead of resolving ``resume`` a second time
planned_run_dir: Path | None = None


def _run_dir_resolver(resume, log_dir, default):
    """``hydra.run.dir``: the run being resumed (``true`` = the newest run, a run dir, or a checkpoint
    inside one), else a new directory. A bad ``resume`` raises here, before Hydra creates any file."""
    if _unset(resume):
        return default
    if planned_run_dir is not None:  # resolved once, by the plan
        return str(planned_run_dir)
    return str(resume_target(resume, log_dir)[0])


def _hydra_subdir_resolver(resume):
    """``hydra.output_subdir``: a resumed run keeps the original ``.hydra/`` record and adds one per resume."""
    if _unset(resume):
        return ".hydra"
    import datetime

    return f".hydra/resume-{datetime.datetime.now():%Y-%m-%d_%H-%M-%S}"


def _run_name_resolver(experiment, task, model, data, reproduce=None) -> str:
    """Run directory suffix: ``reproduce-<original run's name>`` for ``reproduce=<run>``, else the experiment preset's
    name when one was used, else task-model-data."""
    if not _unset(reproduce):
        name = Path(str(reproduce)).expanduser().resolve().name
        return "reproduce-" + re.sub(r"^\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_", "", name)  # without its date and time
    if not _unset(experiment):
        return str(experiment).replace("/", "-")
    return "-".join(str(x) for x in (task, model, data) if not _unset(x))


def _job_name_resolver() -> str:
    """A sweep job's readable name, ``<number>_<its overrides>`` (TensorBoard's version folder, so that
    ``tensorboard --logdir <sweep>`` lists ``3_model=lenet,task.optimizer.lr=0.1``); '' for a single run."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return ""
        job = list(hc.overrides.task)
    except Exception:  # composed outside a Hydra job (tests, notebooks)
        return ""
    swept = _swept_keys()  # only what differs between the jobs, when the sweep's command line is known
    shown = [o for o in job if o.split("=", 1)[0].lstrip("+~") in swept] if swept else job
    name = "_".join([str(hc.job.num), ",".join(shown)]).rstrip("_")
    return re.sub(r"[^\w=.,+-]+", "-", name)[:120]


def _swept_keys() -> set[str]:
    """Keys given several values on this process's command line (``-m task=siamese,triplet``)."""
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from labkit.run.rendezvous import command_line

        parsed = OverridesParser.create().parse_overrides([a for a in command_line()[1:] if not a.startswith("-")])
    except Exception:  # a command line Hydra's parser refuses: no swept keys, the job's overrides name it
        return set()
    return {o.key_or_group for o in parsed if o.is_sweep_override()}


def is_run_dir(path) -> bool:
    """A folder that holds a run: its ``config.yaml`` (written before training starts)."""
    return (Path(path) / CONFIG_FILE).is_file()


def has_metrics(run_dir) -> bool:
    """The run's ``metrics.json`` exists (whether or not it can be read)."""
    return (Path(run_dir) / METRICS_FILE).exists()


def has_record(path) -> bool:
    """A folder that holds a run's record of any kind: a run (:func:`is_run_dir`), or a sweep job refused before it
    started (only its ``metrics.json``, ``status: failed``)."""
    path = Path(path)
    return path.is_dir() and (is_run_dir(path) or (path / METRICS_FILE).is_file())


def has_checkpoint(run_dir) -> bool:
    """True when the run has a checkpoint a resume can continue from (:func:`last_checkpoint`)."""
    return last_checkpoint(run_dir).is_file()


def last_checkpoint(run_dir) -> Path:
    """Where a run keeps the checkpoint of its latest epoch, rewritten after every epoch: ``checkpoints/last.ckpt``."""
    return Path(run_dir) / CKPT_DIR / "last.ckpt"


def _recorded_start(run: Path) -> float | None:
    """When the run recorded that it started: its first session in provenance.json, else a ``started`` in its
    metrics.json (seconds since the epoch; None when it recorded none)."""
    import datetime

    texts = []
    try:
        sessions = read_provenance(run).get("sessions") or []
        texts.append(sessions[0].get("started") if sessions else None)
    except AttributeError:
        pass
    texts.append(read_metrics(run).get("started"))
    for text in texts:
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            return float(text)
        if isinstance(text, str):
            try:
                return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").timestamp()
            except ValueError:
                continue
    return None


def _started(run: Path) -> tuple[float, float]:
    """When a run started, as it recorded it (:func:`_recorded_start`, to the second), not by its folder's name (a
    custom ``hydra.run.dir`` such as ``slurm-<job id>`` sorts anywhere); for runs of the same second, or runs that
    recorded nothing (killed before their first record), the time of Hydra's first record of it (or of its
    config.yaml)."""
    first = run / ".hydra" / "hydra.yaml"
    try:
        when = (first if first.is_file() else run / CONFIG_FILE).stat().st_mtime
    except OSError:
        when = 0.0
    recorded = _recorded_start(run)
    return (float(int(recorded)) if recorded is not None else float(int(when))), when


def latest_run(log_dir) -> tuple[Path, list[Path]]:
    """The newest run under ``<log_dir>/runs`` that has a checkpoint to resume, and the newer runs passed over
    because they have none (a run refused or killed before its first epoch)."""
    runs_dir = Path(log_dir) / "runs"
    candidates = sorted((p for p in runs_dir.glob("*") if is_run_dir(p)), key=_started) if runs_dir.is_dir() else []
    skipped = []
    for run in reversed(candidates):
        if has_checkpoint(run):
            return run, skipped
        skipped.append(run)
    if skipped:
        raise RunNotFoundError(f"resume=true found no run with a checkpoint to resume in {runs_dir} (paths.log_dir="
                               f"{log_dir}): {len(skipped)} run(s) there never finished an epoch, the newest "
                               f"{skipped[0].name}. Give resume=<run directory> to start one of them again")
    raise RunNotFoundError(f"resume=true found no run to resume in {runs_dir} (paths.log_dir={log_dir}): start "
                           "a run first, or give resume=<run directory or .ckpt>")


def resume_target(resume, log_dir) -> tuple[Path, Path | None, list[Path]]:
    """(run dir, checkpoint to resume from or None if the run never saved one, newer runs that resume=true passed
    over because they have no checkpoint)."""
    skipped: list[Path] = []
    if resume is True or str(resume).lower() == "true":
        (run_dir, skipped), ckpt = latest_run(log_dir), None
    else:
        run_dir, ckpt = resolve_run(resume, key="resume")
    if ckpt is None:
        ckpt = last_checkpoint(run_dir) if has_checkpoint(run_dir) else None
    return run_dir, ckpt, skipped


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("labkit_uid"):
        OmegaConf.register_new_resolver("labkit_uid", lambda: uuid.uuid4().hex[:6], use_cache=True)
    if not OmegaConf.has_resolver("labkit_run_dir"):
        OmegaConf.register_new_resolver("labkit_run_dir", _run_dir_resolver)
    if not OmegaConf.has_resolver("labkit_hydra_subdir"):
        OmegaConf.register_new_resolver("labkit_hydra_subdir", _hydra_subdir_resolver)
    if not OmegaConf.has_resolver("labkit_job_name"):
        OmegaConf.register_new_resolver("labkit_job_name", _job_name_resolver)
    if not OmegaConf.has_resolver("labkit_run_name"):
        OmegaConf.register_new_resolver("labkit_run_name", _run_name_resolver)


# (not on import: a notebook that imports labkit keeps OmegaConf as it was; Hydra registers them through
# hydra_plugins/labkit_schemas whenever it starts, and load_config() before it reads a saved config)
# ----- run directories ---------------------------------------------------------------------------
# A run directory refers to itself only through paths relative to it: config.yaml writes them as
# ``${paths.output_dir}/...`` and metrics.json as ``checkpoints/<file>``; loading re-derives them from where
# the directory is now, so a run that was moved or copied evaluates and resumes *itself*.
HERE = "${paths.output_dir}"


def _rebase(obj, roots: list[str], new: str):
    """Every string inside ``obj`` that starts with one of ``roots`` (a run directory) rebased onto ``new``."""
    if isinstance(obj, dict):
        return {k: _rebase(v, roots, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rebase(v, roots, new) for v in obj]
    if isinstance(obj, str):
        for root in roots:
            if obj == root:
                return new
            if obj.startswith(root + os.sep):
                return new + "/" + obj[len(root) + 1:]
    return obj


def _forms(path) -> list[str]:
    """The spellings of a directory that may appear in a config: as given, absolute, resolved."""
    p = Path(path)
    forms = {str(p), str(p.absolute()), str(p.resolve())}
    return sorted((f for f in forms if f not in ("", ".")), key=len, reverse=True)


def save_config(cfg: DictConfig, run_dir) -> Path:
    """Save the resolved config (without Hydra's own node) as ``<run>/config.yaml``; every path inside the
    run directory is written relative to it (``${paths.output_dir}/checkpoints``)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    container = _rebase(container, _forms(run_dir), HERE)
    container.setdefault("paths", {})["output_dir"] = "."  # re-derived from the directory's location on load
    path = Path(run_dir) / CONFIG_FILE
    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(container)))
    return path


def load_config(run_dir) -> DictConfig:
    """The run's saved config with ``paths.output_dir`` set to where the directory is now (older configs that
    hold absolute paths into their original location are rebased onto the current one)."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise RunNotFoundError(f"{run_dir} is not a labkit run directory: it has no {CONFIG_FILE} (a run directory "
                               f"holds {CONFIG_FILE}, {METRICS_FILE} and {CKPT_DIR}/, under paths.log_dir/runs)")
    register_resolvers()  # a saved config may hold ${labkit_job_name:} and friends
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:
        raise RunNotFoundError(f"{path} cannot be read as YAML ({type(e).__name__}: {str(e).splitlines()[0]}): "
                               "the run's config is damaged") from None
    here = str(run_dir.resolve())
    old = OmegaConf.select(cfg, "paths.output_dir", default=None, throw_on_missing=False)
    container = OmegaConf.to_container(cfg, resolve=False)
    if isinstance(old, str) and os.path.isabs(old) and old != here:
        container = _rebase(container, _forms(old), HERE)
    container.setdefault("paths", {})["output_dir"] = here
    return OmegaConf.create(container)


def resolve_run(path, key: str = "run") -> tuple[Path, Path | None]:
    """(run dir, checkpoint or None) from a run directory or a checkpoint file inside one.

    Raises :class:`RunNotFoundError` (before anything is written) when ``path`` is neither."""
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise RunNotFoundError(f"{key}={path} does not exist: give a run directory (e.g. logs/runs/<run>) or a .ckpt "
                               "file inside one")
    if p.is_file():
        run = p.parent.parent if p.parent.name == CKPT_DIR else p.parent
        if not is_run_dir(run):
            raise RunNotFoundError(f"{key}={path}: the checkpoint is not inside a labkit run directory ({run} has no "
                                   f"{CONFIG_FILE}); give the run directory it belongs to")
        return run, p
    if not is_run_dir(p):
        raise RunNotFoundError(f"{key}={path} is not a labkit run directory: it has no {CONFIG_FILE}. Give a folder "
                               "under paths.log_dir/runs (or a sweep job folder), or a .ckpt inside one")
    return p, None


def read_saved_config(run_dir) -> DictConfig | None:
    """The run's ``config.yaml`` as it was written (paths relative to the run, nothing rebased: what tables of runs
    compare); None when there is none, or a warning naming it and None when it is damaged (one bad run must not hide
    the others)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        return OmegaConf.load(path)
    except Exception as e:  # any YAML or OmegaConf error: a damaged file must not hide the other runs
        log.warning("cannot read %s: %s", path, e)
        return None


def read_config_text(run_dir) -> str:
    """The text of the run's ``config.yaml`` (raises OSError when there is none)."""
    return (Path(run_dir) / CONFIG_FILE).read_text()


def config_digest(run_dir, trained: bool = False) -> str | None:
    """The sha256 of the run's ``config.yaml`` as it is now (None when there is none): what metrics.json and
    provenance.json record of the config a session trained with. ``trained``: of the copy :func:`keep_trained_config`
    kept instead."""
    path = Path(run_dir) / (TRAINED_CONFIG_FILE if trained else CONFIG_FILE)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def keep_trained_config(run_dir) -> str:
    """Keep a copy of the ``config.yaml`` this session trains with, beside it, and return its sha256 (what
    metrics.json and provenance.json record)."""
    text = read_config_text(run_dir)
    atomic_write_text(Path(run_dir) / TRAINED_CONFIG_FILE, text)
    return hashlib.sha256(text.encode()).hexdigest()


def trained_config_file(run_dir) -> Path | None:
    """The copy of the config the run last trained with (None when none was kept: labkit before that copy)."""
    path = Path(run_dir) / TRAINED_CONFIG_FILE
    return path if path.is_file() else None


def write_diff(run_dir, text: str) -> str:
    """Save a dirty checkout's uncommitted changes beside the run's provenance; returns the file's name, as
    provenance.json records it."""
    atomic_write_text(Path(run_dir) / DIFF_FILE, text)
    return DIFF_FILE


def relative_to_run(path, run_dir) -> str | None:
    """``path`` as stored in metrics.json: relative to the run directory when inside it."""
    if not path:
        return None
    p, run = Path(path), Path(run_dir)
    for root in _forms(run):
        try:
            return Path(os.path.abspath(p)).relative_to(root).as_posix()
        except ValueError:
            continue
    return str(p)


def read_metrics(run_dir, strict: bool = False) -> dict:
    """The run's ``metrics.json`` as a dict; ``{}`` when there is none (a run still going, or killed). A damaged file
    is a warning naming it and ``{}`` (one bad run must not hide the others), or, with ``strict``, the error."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return {}
    try:
        metrics = read_json(path)
    except (OSError, ValueError) as e:
        if strict:
            raise
        log.warning("cannot read %s: %s", path, e)
        return {}
    return metrics if isinstance(metrics, dict) else {}


def check_status(status: Any) -> Status:
    """``status`` when it is one labkit writes (:data:`STATUSES`), else a ValueError that names the known ones."""
    if status not in STATUSES:
        raise ValueError(f"{status!r} is not a run status labkit writes to {METRICS_FILE}: it is one of "
                         f"{', '.join(STATUSES)}")
    return status


def read_status(run_dir, strict: bool = False) -> str | None:
    """The ``status`` the run's metrics.json records (None without one); read back as written, so that an old or
    hand-edited record still shows what it says."""
    status = read_metrics(run_dir, strict=strict).get("status")
    return None if status is None else str(status)


def write_metrics(run_dir, record: dict[str, Any]) -> Path:
    """Write the run's ``metrics.json`` (atomically); its ``status`` must be one of :data:`STATUSES`."""
    check_status(record.get("status"))
    path = Path(run_dir) / METRICS_FILE
    write_json(path, record)
    return path


def read_resume_failures(run_dir) -> list[dict[str, Any]]:
    """The failed resumes ``resume_failed.json`` records, oldest first ([] without one)."""
    path = Path(run_dir) / RESUME_FAILED_FILE
    return list(read_json(path).get("attempts", [])) if path.exists() else []


def add_resume_failure(run_dir, entry: dict[str, Any]) -> Path:
    """Add a failed resume to ``resume_failed.json`` (the finished run's metrics.json is kept as it was)."""
    check_status(entry.get("status"))
    path = Path(run_dir) / RESUME_FAILED_FILE
    write_json(path, {"attempts": [*read_resume_failures(run_dir), entry]})
    return path


def read_provenance(run_dir) -> dict[str, Any]:
    """The run's ``provenance.json`` ({} when it has none or it cannot be read: runs of labkit versions before it)."""
    path = Path(run_dir) / PROVENANCE_FILE
    try:
        return read_json(path) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def write_provenance(run_dir, record: dict[str, Any]) -> None:
    """Write the run's ``provenance.json`` (atomically)."""
    write_json(Path(run_dir) / PROVENANCE_FILE, record)


def recorded_best(run_dir) -> Path | None:
    """Where the best checkpoint that the run's metrics.json names lies inside ``run_dir`` (whether or not the file
    is there), or None when there is no metrics.json or it names none. Recorded relative (this layout) or, in older
    runs, absolute: only its place inside this run counts."""
    best = read_metrics(run_dir).get("best_checkpoint")
    if not best:
        return None
    return Path(run_dir) / best if not os.path.isabs(best) else Path(run_dir) / CKPT_DIR / Path(best).name


def find_checkpoint(run_dir, which: str = "best") -> Path:
    """The run's best (as recorded in metrics.json, else the newest non-last) or last checkpoint.

    Only files inside ``run_dir`` are considered: a run that lacks its checkpoints says so and never falls back to
    a file elsewhere (such as the original of a copied run)."""
    run_dir = Path(run_dir)
    ckdir = run_dir / CKPT_DIR
    if which not in ("best", "last"):
        p = Path(which).expanduser()
        for cand in ((p,) if p.is_absolute() else (run_dir / p, ckdir / p)):
            if cand.is_file():
                return cand
        raise RunNotFoundError(f"ckpt={which}: no such checkpoint in {ckdir}; use best, last or a file name there")
    p = recorded_best(run_dir) if which == "best" else None
    if p is not None:
        if p.is_file():
            return p
        raise RunNotFoundError(f"{run_dir} lacks its best checkpoint {CKPT_DIR}/{p.name} (recorded in "
                               f"{METRICS_FILE}): was the run copied or moved without its {CKPT_DIR}/ folder? "
                               f"Use ckpt=last or another file in {ckdir} if it is there")
    last = ckdir / "last.ckpt"
    if which == "last":
        if last.is_file():
            return last
        raise RunNotFoundError(f"{run_dir} has no last checkpoint ({ckdir}/last.ckpt)")
    others = sorted((p for p in ckdir.glob("*.ckpt") if p.name != "last.ckpt"), key=lambda p: p.stat().st_mtime) \
        if ckdir.is_dir() else []
    if others:
        return others[-1]
    if last.is_file():
        return last
    raise RunNotFoundError(f"no checkpoint found in {ckdir}: did the run finish at least one epoch, or was it copied "
                           f"without its {CKPT_DIR}/ folder?")


# ----- one writer per run directory -----------------------------------------------------------------------------
# train.py and resume=... hold an exclusive flock(2) on <run>/.labkit.lock while they write the run. The kernel drops
# the lock when its process ends, however it ends (kill -9, a node that reboots), so a lock left by a killed process
# is simply free again: the file's text (pid, host, time, command) only names the holder in the refusal and in the
# note of a take-over. flock works across the machines of a cluster on NFSv4 and Lustre/GPFS mounted with locking
# (Linux maps it onto the filesystem's byte-range locks). Readers (evaluate.py into its staging folder, compare.py,
# predict.py, export.py into their own sub-folders) take no lock. Under DDP only global rank 0 takes it: the other
# ranks write nothing of the run's own records.
LOCK_FILE = ".labkit.lock"


class RunLockedError(LabkitError):
    """Another process is writing this run directory."""


RANK_WAIT_ENV = "LABKIT_RANK_WAIT_S"  # how long a non-zero rank waits for rank 0's claim (seconds)
RANK_WAIT_S = 600.0


def _rank_wait() -> float:
    try:
        return float(os.environ.get(RANK_WAIT_ENV, RANK_WAIT_S))
    except ValueError:
        return RANK_WAIT_S


def _claimed(path: Path) -> bool:
    """Rank 0 holds the run: its lock file names a holder (emptied when released) or is locked."""
    if _holder(path):
        return True
    if fcntl is None or not path.is_file():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


class RankZeroAbsentError(ConfigError):
    """A non-zero rank waited in vain for global rank 0 to claim the run directory."""


def run_dir_override(overrides) -> str | None:
    """The value of a ``hydra.run.dir=`` among command-line overrides (quotes removed); None when there is none."""
    for o in overrides:
        key, eq, value = str(o).partition("=")
        if eq and key.lstrip("+") == "hydra.run.dir":
            return value.strip("'\"")
    return None


def run_dir_given() -> bool:
    """Whether this Hydra job's ``hydra.run.dir`` was given on its command line (other processes, Lightning's other
    ranks or other nodes, may share that folder); True outside a Hydra job (not known: treated as shared)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        given = HydraConfig.get().overrides.hydra
    except ValueError:  # HydraConfig was not set: not a Hydra job
        return True
    return run_dir_override(given) is not None


def wait_for_rank_zero(run_dir, me: ranks.Ranks, timeout: float | None = None, poll: float = 0.5) -> Path:
    """A non-zero rank uses global rank 0's run directory: wait (at most ``timeout`` s, ``LABKIT_RANK_WAIT_S``,
    default 600) until rank 0 has claimed ``run_dir``; when it does not show up, one paragraph instead of a hang in
    the process group's rendezvous."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK_FILE
    timeout = _rank_wait() if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while not _claimed(path):
        if time.monotonic() >= deadline:
            raise RankZeroAbsentError(
                f"this process is {me.describe()} and uses the run directory that global rank 0 claims, but after "
                f"{timeout:.0f} s {run_dir} has not been claimed ({LOCK_FILE} names no holder). Either every node "
                f"writes its own folder (give all of them the same hydra.run.dir=<folder> on a filesystem they "
                f"share, e.g. hydra.run.dir=/shared/logs/runs/<name>), or rank 0 stopped before it claimed the run "
                f"(see its log), or it is slower to start than {timeout:.0f} s (raise {RANK_WAIT_ENV}=<seconds>)")
        time.sleep(poll)
    return run_dir


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    return (f"process {holder.get('pid', '?')} on {holder.get('host', '?')} (since {holder.get('since', '?')}: "
            f"{holder.get('command', '?')})")


def _refusal(run_dir: Path, holder: dict) -> RunLockedError:
    return RunLockedError(
        f"{run_dir} is being written by {_describe(holder)}: one process at a time trains or resumes a run, and "
        f"nothing was changed. Wait for it to finish (or stop it), then resume; to try other settings from its "
        f"weights, start a new run: python train.py init_from={run_dir} ... (evaluate.py and compare.py may read it "
        "meanwhile)")


def check_unclaimed(run_dir) -> None:
    """Refuse, before anything is written, a run directory another live process holds (a no-op under DDP's
    other ranks and where the platform has no flock)."""
    path = Path(run_dir) / LOCK_FILE
    if fcntl is None or not ranks.current().is_zero or not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _refusal(Path(run_dir), _holder(path)) from None
    finally:
        os.close(fd)  # closing releases a lock this check took


@contextlib.contextmanager
def claim(run_dir, me: ranks.Ranks | None = None):
    """Hold the run directory for this process until the block ends; a second writer is refused at once
    (:class:`RunLockedError` naming the holder). A lock whose process died is taken over, with a note. Only global
    rank 0 (``me``, default: :func:`labkit.run.ranks.current`) claims; any other rank, on any node, waits for rank
    0's claim of the same folder (:func:`wait_for_rank_zero`) and writes none of the run's records."""
    run_dir = Path(run_dir)
    me = ranks.current() if me is None else me
    if not me.is_zero:
        yield wait_for_rank_zero(run_dir, me)
        return
    if fcntl is None:
        yield run_dir
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refusal(run_dir, _holder(path)) from None
        left = _holder(path)
        if left:
            log.info("took over the lock of %s, which is no longer running", _describe(left))
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]])[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield run_dir
        finally:
            os.ftruncate(fd, 0)  # released cleanly: nothing to report to the next holder
    finally:
        os.close(fd)
