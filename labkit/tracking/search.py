"""Hyper-parameter searches with Optuna (``python train.py hparams_search=optuna``).

Two sides: in each trial's job, :class:`labkit.callbacks.TrialReporter` (a Lightning callback the sweeper switches
on through the job's overrides: ``++callbacks.optuna_trial={_target_: labkit.callbacks.TrialReporter, trial: N,
...}``) reports the validation metric to the study after every epoch and asks the study's pruner (a hopeless trial ends
with :class:`labkit.callbacks.TrialPruned`, status ``pruned``); the study's storages and pruners
(:mod:`labkit.loggers.optuna`) serve both sides. This module holds the other side:

- in the sweeper (``hydra_plugins/labkit_optuna_sweeper``): the search space read from Hydra's override syntax
  (:func:`search_space`), which trials count towards ``n_trials`` (:func:`tally`), trials left running by a process
  that is gone (:func:`release_abandoned`: on this machine by their process id, on other machines when their
  :class:`Heartbeat` stops), the study's record (:func:`study_rows`, ``study.json`` beside the sweep summary) and
  Optuna's plots (:func:`write_plots`).

Optuna is imported inside the functions: importing this module costs nothing more than Lightning.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from labkit.adapters.optuna import set_trial_user_attr
from labkit.callbacks.search import PRUNED_ATTR, TrialPruned, TrialReporter  # noqa: F401 (the sweeper's names; old configs' target)
from labkit.core.errors import ConfigError
from labkit.core.values import flatten, resolved
from labkit.loggers.optuna import (  # noqa: F401 (the sweeper's names)
    PRUNERS,
    check_journal_path,
    is_url,
    make_pruner,
    open_storage,
    pruner_name,
    storage_label,
)

log = logging.getLogger("labkit")

RESULTS_FILE = "optimization_results.yaml"
PLOT_FILES = {"history": "optuna_history.png", "importances": "optuna_importances.png", "slice": "optuna_slice.png"}
# trial user attributes the sweeper and the reporter write (all start with labkit_)
WORKER_ATTR = "labkit_worker"  # {"host", "pid", "start"}: the sweeper process that asked for the trial
ABANDONED_ATTR = "labkit_abandoned"  # failed because the process that ran it is gone: does not count
HEARTBEAT_ATTR = "labkit_heartbeat"  # time.time() of the asking sweeper's last sign of life, renewed while it runs
STALE_AFTER_S = 900.0  # default hydra.sweeper.stale_after_s: another machine's trial silent this long is abandoned
DISCARDED_ATTR = "labkit_discarded"  # asked beyond n_trials by a race between workers, never run: does not count
RUN_DIR_ATTR = "labkit_run_dir"
DIRECTIONS = ("maximize", "minimize")
# overrides that change how a search runs, not what it finds: left out of the default study name
DRIVING_KEYS = ("hparams_search", "logger", "paths", "trainer.enable_progress_bar", "trainer.enable_model_summary",
                "trainer.accelerator", "data.num_workers", "data.pin_memory", "data.persistent_workers")



def _space_error(text: str, why: str, example: str) -> ConfigError:
    return ConfigError(f"the search space's {text} is invalid: {why}. Write it as in conf/hparams_search/optuna.yaml's "
                       f"hydra.sweeper.params or on the command line, e.g. {example}; the forms are choice(a, b, ...), "
                       "range(start, stop[, step]), interval(low, high) and tag(log, interval(low, high)) "
                       "(https://hydra.cc/docs/advanced/override_grammar/extended/)")


def _distribution(override, text: str):
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    key, value = override.key_or_group, override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        choices = list(override.sweep_iterator())
        if not choices:
            raise _space_error(text, "it has no values", f"{key}=choice(32, 64)")
        if isinstance(value, RangeSweep):
            choices = sorted(choices)
        bad = [c for c in choices if not isinstance(c, (str, int, float, bool))]
        if bad:
            raise _space_error(text, f"{bad[0]!r} cannot be a choice (numbers, words, true, false)",
                               f"{key}=choice(adam, sgd)")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise _space_error(text, f"the range is empty (from {value.start} up to, not including, {value.stop} in steps "
                                     f"of {value.step})", f"{key}=range(1, 5)")
        low, high, step = min(values), max(values), abs(value.step)
        if all(isinstance(v, int) for v in values) and isinstance(step, int):
            return IntDistribution(low, high, step=step)
        return FloatDistribution(float(low), float(high), step=float(step))
    if isinstance(value, IntervalSweep):
        low, high, log_scale = value.start, value.end, "log" in value.tags
        if not low < high:
            raise _space_error(text, f"the interval is {'empty' if low == high else 'inverted'} ({low} >= {high}): "
                                     "interval(low, high) needs low < high",
                               f"{key}=interval({min(low, high)}, {max(low, high) if low != high else high * 10 or 1})")
        if log_scale and low <= 0:
            raise _space_error(text, f"a log-scaled interval needs low > 0 (here {low})", f"{key}=tag(log, "
                                     f"interval(1e-4, {high}))")
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high, log=log_scale)
        return FloatDistribution(float(low), float(high), log=log_scale)
    raise _space_error(text, f"{type(value).__name__} cannot be searched by Optuna", f"{key}=interval(0.1, 1)")


def search_space(params: Mapping | None, arguments: Sequence[str] = ()) -> tuple[dict[str, Any], list[str]]:
    """``(distributions by key, fixed overrides)`` from ``hydra.sweeper.params`` (``{key: "tag(log, interval(1e-4,
    0.1))", ...}``, nested mappings flattened to dotted keys) and the command line's arguments (a sweep override there
    is a searched key too, and wins over the YAML's; every other argument is passed to each job as given)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    texts = [f"{k}={v}" for k, v in flatten(resolved(params) or {}).items()] + [str(a) for a in arguments]
    entries: dict[str, tuple[str, Any]] = {}  # key -> (text, distribution or None for a fixed override)
    for text in texts:
        try:
            override = parser.parse_overrides([text])[0]
        except HydraException as e:
            first = (str(e).strip().splitlines() or ["syntax error"])[0]
            raise _space_error(text, f"it cannot be read ({first})", "task.optimizer.lr='tag(log, interval(1e-4, "
                                                                     "0.1))'") from None
        # a later entry (the command line) replaces an earlier one (the YAML) in its place
        entries[override.key_or_group] = (text, _distribution(override, text) if override.is_sweep_override() else None)
    dists = {k: d for k, (_, d) in entries.items() if d is not None}
    fixed = [t for _, (t, d) in entries.items() if d is None]
    return dists, fixed


def suggest(trial, name: str, dist):
    """``trial.suggest_*`` for a distribution of :func:`search_space`."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)


def check_compatible(study, dists: Mapping[str, Any]) -> None:
    """A continued study's earlier trials searched each key over a compatible distribution (Optuna refuses to mix a
    float and a choice under one name): one paragraph before any trial otherwise."""
    from optuna.distributions import check_distribution_compatibility

    seen: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False):
        for k, d in t.distributions.items():
            seen.setdefault(k, d)
    for key, dist in dists.items():
        if key in seen:
            try:
                check_distribution_compatibility(seen[key], dist)
            except ValueError as e:
                raise ConfigError(f"the search space's {key} is {dist} but study '{study.study_name}' searched it as "
                                  f"{seen[key]} ({e}). Keep the kind of each parameter when continuing a study, or start "
                                  f"a new one: hydra.sweeper.study_name=<a new name>") from None


def param_text(value) -> str:
    """A parameter's value as an override's right-hand side."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def override_literal(value) -> str:
    """``value`` (dict, list, str, number, bool, None) in Hydra's override grammar: strings quoted, so paths and URLs
    with any characters pass unchanged."""
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{override_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_literal(v) for v in value) + "]"
    if value is None or isinstance(value, (bool, int, float)):
        return param_text(value)
    # Hydra's quoted strings: a quote is escaped by a backslash, and so is each backslash of a run before a quote or
    # before the closing quote; every other backslash is kept as it is
    text = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, str(value)).replace("'", "\\'")
    return f"'{text}'"


# ----- the objective and what trials report -------------------------------------------------------------------------
def trial_monitor(metric: str, direction: str, task_class) -> tuple[str, str]:
    """``(metric, "min" | "max")`` the trials report each epoch: the validation counterpart of ``optimized_metric``
    (``best_val/acc`` and ``test/acc`` -> ``val/acc``, in the search's direction) when the task logs it, else the
    task's own monitor (``task.monitor``). ``task_class``: a :class:`labkit.tasks.base.LabTask` subclass (see
    :func:`labkit.tracking.summary.declaring_class`)."""
    declared = tuple(task_class.logged_metrics)
    m = re.fullmatch(r"(?:best_)?(?:train|val|test)/(.+)", str(metric))
    if m and f"val/{m.group(1)}" in declared:
        return f"val/{m.group(1)}", "max" if direction == "maximize" else "min"
    name, mode = task_class.monitor
    return str(name), str(mode)


def default_study_name(run_name: str, arguments: Sequence[str], dists: Mapping[str, Any], metric: str,
                       direction: str) -> str:
    """``<experiment or task-model-data>-<8 hex digits>``: the digits hash what the search is (its space, objective,
    direction and the command line's other settings, those that only drive it left out: logger, workers,
    hydra.*), so the same command finds its study again and a different one starts its own."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([str(a) for a in arguments])
    kept = sorted(str(a) for a, o in zip(arguments, parsed) if not o.is_sweep_override() and not any(
        o.key_or_group.replace("/", ".") == k or o.key_or_group.replace("/", ".").startswith(k + ".")
        for k in DRIVING_KEYS))
    space = sorted(f"{k}={d!r}" for k, d in dists.items())
    digest = hashlib.sha1("\n".join([*kept, *space, str(metric), str(direction)]).encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', run_name).strip('-') or 'search'}-{digest}"


# ----- the study: who counts, who is gone -----------------------------------------------------------------------------
def _process_start(pid: int) -> str | None:
    """The kernel's start time of a process (Linux), so a reused pid is not taken for the original process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_identity() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid())}


def _alive(worker: Mapping) -> bool | None:
    """Whether the sweeper process that asked for a trial still runs; None when it ran on another machine."""
    if worker.get("host") != socket.gethostname() or not isinstance(worker.get("pid"), int):
        return None
    pid = worker["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = _process_start(pid)
    return not (worker.get("start") and start and start != worker["start"])


def counts(trial) -> bool:
    """Whether a trial counts towards ``n_trials``: finished (complete, pruned, failed in its job) or running, but not
    one abandoned by a process that is gone or discarded after a race."""
    from optuna.trial import TrialState

    if ABANDONED_ATTR in trial.user_attrs or DISCARDED_ATTR in trial.user_attrs:
        return False
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


def tally(study) -> dict[str, int]:
    """Counted trials by state (``complete``, ``pruned``, ``failed``, ``running``) and their ``total``; and the failed
    trials that do not count: ``abandoned`` (their process was gone) and ``discarded`` (asked beyond ``n_trials``
    by a race, never run), outside the total."""
    out = {"complete": 0, "pruned": 0, "failed": 0, "running": 0}
    abandoned = discarded = 0
    for t in study.get_trials(deepcopy=False):
        if counts(t):
            out[state_name(t)] += 1
        elif ABANDONED_ATTR in t.user_attrs:
            abandoned += 1
        elif DISCARDED_ATTR in t.user_attrs:
            discarded += 1
    out["total"] = sum(out.values())
    out.update(abandoned=abandoned, discarded=discarded)
    return out


def size_line(n_trials: int, more: bool, cfg: DictConfig, dists: Mapping[str, Any]) -> str:
    """The line said before the first trial: how many trials of how many epochs on which data, and the keys that
    change it (``hparams_search=optuna`` alone is 10 trials x 15 epochs: minutes of work)."""
    epochs = OmegaConf.select(cfg, "trainer.max_epochs", default=None)
    if "trainer.max_epochs" in dists:
        each = "epochs searched each"
    elif isinstance(epochs, int) and epochs >= 0:
        each = f"{epochs} epoch{'s' if epochs != 1 else ''} each"
    else:
        each = "no epoch limit each"
    choices = OmegaConf.select(cfg, "hydra.runtime.choices", default=None) or {}
    data = choices.get("data") or OmegaConf.select(cfg, "data.name", default=None) or "the configured data"
    return (f"search: {n_trials}{' more' if more else ''} trial{'s' if n_trials != 1 else ''} x {each} on {data} "
            "(hydra.sweeper.n_trials / trainer.max_epochs to change)")


def state_name(trial) -> str:
    from optuna.trial import TrialState

    return {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
            TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}[trial.state]


def release_abandoned(study, stale_after_s: float | None = STALE_AFTER_S, now: float | None = None) -> list[int]:
    """Trials still marked running whose sweeper process is gone: failed, marked abandoned (they do not count towards
    ``n_trials``), each with a warning saying why; returns their numbers. On this machine the process is looked up
    by its id; on another machine (whose processes cannot be seen from here) a trial counts as abandoned when its
    :class:`Heartbeat` has been silent for more than ``stale_after_s`` seconds (None: never; trials of labkit
    versions without a heartbeat are left alone)."""
    from optuna.trial import TrialState

    now = time.time() if now is None else now
    released = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get(WORKER_ATTR)
        if not isinstance(worker, Mapping):
            continue
        alive, why = _alive(worker), None
        if alive is False:
            why = f"process {worker.get('pid')} on {worker.get('host')} is gone"
        elif alive is None and stale_after_s is not None:
            beat = t.user_attrs.get(HEARTBEAT_ATTR)
            if isinstance(beat, (int, float)) and now - beat > stale_after_s:
                why = (f"no heartbeat from process {worker.get('pid')} on {worker.get('host')} for {now - beat:.0f} s "
                       f"(hydra.sweeper.stale_after_s={stale_after_s:g})")
        if why is None:
            continue
        try:
            set_trial_user_attr(study, t, ABANDONED_ATTR, why)
            study.tell(t.number, state=TrialState.FAIL)
        except Exception:  # another worker released it first
            continue
        released.append(t.number)
        log.warning("trial %d was left running (%s): marked failed, it does not count", t.number, why)
    return released


class Heartbeat:
    """While a batch of trials runs, a daemon thread stamps :data:`HEARTBEAT_ATTR` (``time.time()``) on each of them
    every ``interval`` seconds, so that a worker on another machine can tell a trial whose sweeper died (its stamps
    stop) from one that is still training (:func:`release_abandoned`). A stamp that cannot be written (the trial was
    told meanwhile, the storage is briefly unreachable) is skipped; the next one tries again.

    ``with Heartbeat(study, trials, interval): launcher.launch(...)``"""

    def __init__(self, study, trials: Sequence, interval: float):
        self.study, self.trials, self.interval = study, list(trials), float(interval)  # the live trials study.ask() gave
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="labkit-optuna-heartbeat", daemon=True)

    def beat(self) -> None:
        stamp = time.time()
        for trial in self.trials:
            try:
                trial.set_user_attr(HEARTBEAT_ATTR, stamp)
            except Exception:  # finished meanwhile, or the storage is briefly away: the next beat tries again
                continue

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def __enter__(self) -> "Heartbeat":
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=max(5.0, self.interval))


def heartbeat_interval(stale_after_s: float | None) -> float:
    """How often a sweeper stamps its running trials: a fifth of the grace period, at most once a minute."""
    return 60.0 if stale_after_s is None else max(0.01, min(60.0, float(stale_after_s) / 5))


def discard(study, trial, why: str) -> None:
    """Fail a trial that will never run (asked beyond ``n_trials`` by a race, or its batch could not start); it does
    not count."""
    from optuna.trial import TrialState

    try:
        trial.set_user_attr(DISCARDED_ATTR, why)
        study.tell(trial, state=TrialState.FAIL)
    except Exception:  # told or released by another worker meanwhile: nothing to discard
        pass


def study_rows(study) -> list[dict[str, Any]]:
    """Every trial of the study: number, state, value, params, epochs reported, run directory, note."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        note = t.user_attrs.get(ABANDONED_ATTR) or t.user_attrs.get(DISCARDED_ATTR) or t.user_attrs.get("labkit_error")
        rows.append({"number": t.number, "state": state_name(t), "value": t.value, "params": dict(t.params),
                     "epochs": len(t.intermediate_values), "stopped_at_epoch": t.user_attrs.get(PRUNED_ATTR),
                     "run_dir": t.user_attrs.get(RUN_DIR_ATTR), "counts": counts(t), "note": note or ""})
    return rows


def best_trial(study):
    """The best complete trial, or None."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    try:
        return study.best_trial
    except ValueError:
        return None


# ----- plots --------------------------------------------------------------------------------------------------------
def write_plots(study, out_dir) -> tuple[dict[str, str], list[str]]:
    """Optuna's optimization history, parameter importances and slice plots as PNG files in ``out_dir``
    (:data:`PLOT_FILES`, matplotlib's Agg backend); returns ``({name: file name}, notes about plots skipped)``."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    from labkit.core.files import save_figure

    out_dir = Path(out_dir)
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    written: dict[str, str] = {}
    notes: list[str] = []
    if complete == 0:
        return written, ["optuna plots: skipped, no complete trial yet"]
    from optuna.visualization import matplotlib as ovm

    plots = {"history": ovm.plot_optimization_history, "slice": ovm.plot_slice}
    if complete >= 2:
        plots["importances"] = ovm.plot_param_importances
    else:
        notes.append(f"parameter importances: skipped, they need at least 2 complete trials ({complete} so far)")
    category_log = logging.getLogger("matplotlib.category")  # "using categorical units" for choice() values
    level = category_log.level
    category_log.setLevel(logging.WARNING)
    try:
        for name, plot in plots.items():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    axes = plot(study)
                    panels = list(axes.flat) if hasattr(axes, "flat") else [axes]
                    fig = panels[0].figure
                    fig.set_size_inches(max(6.4, 3.6 * len(panels) + 1.2), 4.4)
                    save_figure(fig, out_dir / PLOT_FILES[name])
                written[name] = PLOT_FILES[name]
            except Exception as e:  # a plot Optuna cannot draw for this study must not cost the others
                plt.close("all")
                notes.append(f"{name} plot: skipped, {type(e).__name__}: {e}")
    finally:
        category_log.setLevel(level)
    return written, notes

