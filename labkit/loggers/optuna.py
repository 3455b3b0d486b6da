"""An Optuna study's storage and pruner, shared by the search's sweeper (:mod:`labkit.tracking.search`) and each
trial's reporter (:class:`labkit.callbacks.TrialReporter`): the storages (:func:`open_storage`: a SQLAlchemy URL or a
journal file, :mod:`labkit.loggers.journal`) and the pruners (:func:`make_pruner`).

Optuna is imported inside the functions."""
from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping

from labkit.core import checks
from labkit.core.errors import ConfigError
from labkit.core.values import resolved

log = logging.getLogger("labkit")

# pruner names -> (class, labkit's defaults; hydra.sweeper.pruner_args override them)
PRUNERS: dict[str, tuple[str, dict[str, Any]]] = {
    "none": ("optuna.pruners.NopPruner", {}),
    # never before 5 trials have finished, never on a trial's first epoch (its accuracy says little yet)
    "median": ("optuna.pruners.MedianPruner", {"n_startup_trials": 5, "n_warmup_steps": 1}),
    "percentile": ("optuna.pruners.PercentilePruner", {"percentile": 25.0, "n_startup_trials": 5, "n_warmup_steps": 1}),
    "hyperband": ("optuna.pruners.HyperbandPruner", {}),
    "successive_halving": ("optuna.pruners.SuccessiveHalvingPruner", {}),
    # e.g. pruner_args={lower: 0.2}: stop a trial whose metric is below 0.2 (above `upper` for a minimized metric)
    "threshold": ("optuna.pruners.ThresholdPruner", {}),
}


# ----- storages -----------------------------------------------------------------------------------------------------
def is_url(spec: str) -> bool:
    return "://" in str(spec)


def storage_label(spec: str) -> str:
    """The storage as a person reads it: a URL without its password, or the journal file."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", str(spec)) if is_url(spec) else str(spec)


def open_storage(spec: str, check: bool = False):
    """The Optuna storage ``spec`` names: a SQLAlchemy URL (``sqlite:///x.db``, ``postgresql://...``) or the path of a
    journal file (:class:`optuna.storages.JournalStorage` on a ``JournalFileBackend``: one file, appended under a
    lock that works on NFS; a last line torn by a worker killed mid-write is repaired: :mod:`labkit.loggers.journal`).
    ``check``: one paragraph (:class:`ConfigError`) when it cannot be opened or written."""
    import optuna

    spec = str(spec)
    if is_url(spec):
        try:
            kwargs = {}
            if spec.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "mysql"):
                kwargs["engine_kwargs"] = {"connect_args": {"connect_timeout": 10}}  # an unreachable server: 10 s
            return optuna.storages.RDBStorage(spec, **kwargs)
        except Exception as e:
            if not check:
                raise
            first = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(".")
            missing = next((x.name for x in (e, e.__cause__) if isinstance(x, ImportError) and x.name), None)
            hint = f" Its database driver, the Python module {missing}, is not installed here." if missing else ""
            raise ConfigError(f"hydra.sweeper.storage={storage_label(spec)} cannot be opened: {type(e).__name__}: "
                              f"{first}.{hint} Give a SQLAlchemy URL of a database this machine can reach and write "
                              "(sqlite:///<file>, postgresql://user:password@host/db, mysql+pymysql://...), or the path "
                              "of a journal file (the default: <paths.log_dir>/studies/<study name>.log).") from None
    path = Path(spec).expanduser().absolute()
    if check:
        check_journal_path(path)
    from optuna.storages.journal import JournalStorage

    from labkit.loggers.journal import RepairingJournalFileBackend

    return JournalStorage(RepairingJournalFileBackend(str(path)))


def check_journal_path(path: Path) -> None:
    """The journal file (and its lock beside it) can be created and appended to."""
    def refuse(why: str) -> ConfigError:
        return ConfigError(f"hydra.sweeper.storage={path} cannot be used: {why}. The study's journal file and its lock "
                           "file are written in that folder by every worker: choose a writable place (all machines of "
                           "a cluster search must see the same file), or a database URL (sqlite:///..., "
                           "postgresql://...).")

    if path.is_dir():
        raise refuse("it is a folder, not a file")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise refuse(f"{existing} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise refuse(f"its folder cannot be created ({e.strerror or e})") from None
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".labkit-check-"):
            pass
        with open(path, "ab"):
            pass
    except OSError as e:
        raise refuse(f"{e.strerror or e}") from None


# ----- pruners ------------------------------------------------------------------------------------------------------
def pruner_name(spec) -> str:
    spec = resolved(spec)
    if isinstance(spec, Mapping):  # {_target_: optuna.pruners.ThresholdPruner, ...} -> Threshold
        return re.sub(r"(?<=.)Pruner$", "", str(spec.get("_target_", "?")).rsplit(".", 1)[-1])
    return "none" if spec in (None, False) else str(spec)


def make_pruner(spec, args: Mapping | None = None):
    """An Optuna pruner from ``hydra.sweeper.pruner`` (a name of :data:`PRUNERS`, or ``{_target_: <a pruner class>,
    ...}``) and ``hydra.sweeper.pruner_args``; one paragraph (:class:`ConfigError`) for a name or argument that does
    not exist."""
    import optuna

    spec, args = resolved(spec), dict(resolved(args) or {})
    if isinstance(spec, optuna.pruners.BasePruner):  # made already
        return spec
    if isinstance(spec, Mapping):
        if "_target_" not in spec:
            raise ConfigError(f"hydra.sweeper.pruner={spec} is invalid: a pruner given as a mapping needs a _target_, "
                              "e.g. {_target_: optuna.pruners.MedianPruner, n_startup_trials: 10}")
        target, kwargs = str(spec["_target_"]), {k: v for k, v in spec.items() if k != "_target_"}
        name = target.rsplit(".", 1)[-1]
    else:
        spec = "none" if spec in (None, False) else spec
        if not isinstance(spec, str) or spec.lower() not in PRUNERS:
            raise checks.invalid("hydra.sweeper.pruner", spec, "one of " + ", ".join(PRUNERS),
                                 "or {_target_: <an optuna.pruners class>, ...} for any other pruner. Its arguments "
                                 "go in hydra.sweeper.pruner_args",
                                 checks.did_you_mean(str(spec).lower(), PRUNERS) if isinstance(spec, str) else "")
        target, defaults = PRUNERS[spec.lower()]
        kwargs, name = dict(defaults), spec.lower()
    defaults = {k: v for k, v in kwargs.items() if k not in args}
    kwargs.update(args)
    try:
        cls = checks.locate(target)
    except Exception as e:
        raise ConfigError(f"hydra.sweeper.pruner: cannot import {target}: {e}") from None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        given = f"hydra.sweeper.pruner_args={args}" if args else f"hydra.sweeper.pruner={spec}"
        also = f" (with labkit's defaults {defaults})" if defaults else ""
        raise ConfigError(f"{given} is invalid for the {name} pruner ({target}{also}): {e}. Its arguments: "
                          "https://optuna.readthedocs.io/en/stable/reference/pruners.html") from None


# ----- the search space ---------------------------------------------------------------------------------------------
