"""labkit's Optuna sweeper: a Hydra 1.3 sweeper plugin that drives a maintained Optuna (>= 4.9) with ask/tell.

``hparams_search=optuna`` (conf/hparams_search/optuna.yaml) chooses it (``hydra/sweeper=labkit_optuna``). Each
batch of ``n_jobs`` trials is asked from the study, launched through Hydra's configured launcher (basic, joblib,
submitit) and told back from each job's return value and its metrics.json status (complete, pruned, failed). The
study lives in a storage every worker can reach (a journal file by default, under ``paths.log_dir/studies``), so
several processes, or cluster jobs, share one study, and the same command continues it. The work itself is in
:mod:`labkit.tracking.search`; this module only holds what Hydra needs (the config schema, the plugin class).
This module is imported by Hydra's plugin scan on every run: it imports neither Optuna nor labkit at import time.
"""

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("labkit")

REPORTER = "labkit.callbacks.TrialReporter"
REPORTER_KEY = "callbacks.optuna_trial"


@dataclass
class LabkitOptunaSweeperConf:
    """``hydra.sweeper.*`` of ``hydra/sweeper=labkit_optuna`` (documented in conf/hparams_search/optuna.yaml)."""

    _target_: str = "hydra_plugins.labkit_optuna_sweeper.labkit_optuna_sweeper.LabkitOptunaSweeper"
    _recursive_: bool = False  # the sampler and a pruner given as {_target_: ...} are made by the sweeper, per trial
    direction: str = "maximize"
    study_name: Optional[str] = None
    storage: Optional[str] = None
    n_trials: int = 20
    n_jobs: Optional[int] = None
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None})
    pruner: Any = "median"
    pruner_args: Any = None
    params: Optional[Dict[str, Any]] = None
    # a trial of a sweeper on another machine whose heartbeat has been silent this long counts as abandoned
    stale_after_s: Optional[float] = 900.0


ConfigStore.instance().store(group="hydra/sweeper", name="labkit_optuna", node=LabkitOptunaSweeperConf,
                             provider="labkit")


class LabkitOptunaSweeper(Sweeper):
    """Ask ``n_jobs`` trials, launch them, tell their results; until the study has ``n_trials`` trials in all."""

    def __init__(self, direction: Any = "maximize", study_name: Optional[str] = None, storage: Optional[str] = None,
                 n_trials: Any = 20, n_jobs: Any = None, sampler: Any = None, pruner: Any = "median",
                 pruner_args: Any = None, params: Any = None, stale_after_s: Any = 900.0) -> None:
        self.direction, self.study_name, self.storage = direction, study_name, storage
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.sampler_cfg = OmegaConf.to_container(sampler, resolve=True) if isinstance(sampler, DictConfig) else sampler
        self.pruner = OmegaConf.to_container(pruner, resolve=True) if isinstance(pruner, DictConfig) else pruner
        self.pruner_args = OmegaConf.to_container(pruner_args, resolve=True) if isinstance(pruner_args, DictConfig) \
            else dict(pruner_args or {})
        self.params = params
        self.stale_after_s = stale_after_s
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.launcher = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    # ----- the sweep ------------------------------------------------------------------------------------------------
    def sweep(self, arguments: List[str]) -> Any:
        from labkit.core.errors import LabkitError

        try:
            return self._sweep(list(arguments))
        except LabkitError as e:  # bad input: one paragraph, exit status 1 (--debug: the traceback)
            from labkit.cli import app

            if app._debug([]):  # --debug, or HYDRA_FULL_ERROR=1 set by the user (not the one labkit sets itself)
                raise
            app.fail(e)

    def _settings(self, arguments: List[str]) -> None:
        """Everything checked before the study is touched: counts, direction, search space, objective, pruner,
        sampler, storage and study name."""
        from labkit.core import checks
        from labkit.core.errors import ConfigError
        from labkit.tracking import search

        cfg = self.config
        checks.positive_int("hydra.sweeper.n_trials", self.n_trials,
                            hint="it counts every trial of the study, those of earlier or other processes included")
        checks.one_of("hydra.sweeper.direction", self.direction, search.DIRECTIONS,
                      hint="one objective: the metrics.json key optimized_metric names")
        checks.positive("hydra.sweeper.stale_after_s", self.stale_after_s, optional=True,
                        hint="seconds without a heartbeat after which another machine's running trial counts as "
                             "abandoned; null: never")
        self.batch = self._batch_size()
        self.dists, self.fixed = search.search_space(self.params, arguments)
        if not self.dists:
            raise ConfigError("the search space is empty: give hydra.sweeper.params (as in conf/hparams_search/"
                              "optuna.yaml) or a searched key on the command line, e.g. "
                              "'task.optimizer.lr=tag(log, interval(1e-4, 0.1))'")
        self.metric = cfg.get("optimized_metric")
        if not self.metric:
            raise ConfigError("optimized_metric=null: a search needs the metrics.json key each trial returns, e.g. "
                              "optimized_metric=best_val/acc (hparams_search=optuna sets it)")
        from labkit.tracking.summary import declaring_class

        task_class = declaring_class(str(cfg.task._target_))  # LabTask's defaults when the class declares nothing
        self.monitor, self.mode = search.trial_monitor(str(self.metric), self.direction, task_class)
        search.make_pruner(self.pruner, self.pruner_args)  # a bad name or argument: refused now
        self.seed = (self.sampler_cfg or {}).get("seed") if isinstance(self.sampler_cfg, dict) else None
        self._sampler(0)
        choices = cfg.hydra.runtime.choices
        experiment = choices.get("experiment")
        run_name = str(experiment) if experiment not in (None, "null") else "-".join(
            str(choices.get(g)) for g in ("task", "model", "data") if choices.get(g))
        self.name = str(self.study_name) if self.study_name else search.default_study_name(
            run_name, arguments, self.dists, str(self.metric), self.direction)
        log_dir = Path(str(cfg.paths.log_dir)).expanduser().absolute()
        spec = str(self.storage) if self.storage else str(log_dir / "studies" / f"{self.name}.log")
        self.storage_spec = spec if search.is_url(spec) else str(Path(spec).expanduser().absolute())
        self.storage_obj = search.open_storage(self.storage_spec, check=True)

    def _batch_size(self) -> int:
        from labkit.core import checks

        n = self.n_jobs
        if n is None:  # the launcher's parallelism (joblib's n_jobs), else one at a time
            n = OmegaConf.select(self.config, "hydra.launcher.n_jobs", default=None)
            n = (os.cpu_count() or 1) if isinstance(n, int) and n < 0 else n
            return n if isinstance(n, int) and n > 0 else 1
        return checks.positive_int("hydra.sweeper.n_jobs", n, hint="the trials launched together in each batch")

    def _sampler(self, number: int):
        """The configured sampler; a seeded one is seeded with ``seed + trial number``, so the trials of parallel
        workers differ and a search is reproducible trial by trial."""
        from hydra.utils import instantiate

        from labkit.core.errors import ConfigError

        cfg = dict(self.sampler_cfg or {"_target_": "optuna.samplers.TPESampler"})
        if self.seed is not None:
            cfg["seed"] = int(self.seed) + int(number)
        try:
            return instantiate(cfg)
        except Exception as e:
            cause = e.__cause__ or e
            raise ConfigError(f"hydra.sweeper.sampler={self.sampler_cfg} cannot be made: {cause}. Give an Optuna "
                              "sampler, e.g. {_target_: optuna.samplers.TPESampler, seed: 0}") from None

    def _open_study(self):
        import optuna

        from labkit.core.errors import ConfigError
        from labkit.tracking import search

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweeper says itself what it opened
        try:
            study = optuna.create_study(study_name=self.name, storage=self.storage_obj, sampler=self._sampler(0),
                                        pruner=search.make_pruner(self.pruner, self.pruner_args),
                                        direction=self.direction, load_if_exists=True)
        except Exception as e:
            raise ConfigError(f"the study '{self.name}' cannot be opened in {search.storage_label(self.storage_spec)}: "
                              f"{type(e).__name__}: {e}") from None
        if len(study.directions) != 1 or study.direction.name.lower() != self.direction:
            raise ConfigError(f"hydra.sweeper.direction={self.direction} but study '{self.name}' in "
                              f"{search.storage_label(self.storage_spec)} was made to "
                              f"{', '.join(d.name.lower() for d in study.directions)}: continue it with that direction, "
                              "or start a new study (hydra.sweeper.study_name=<a new name>)")
        search.check_compatible(study, self.dists)
        return study

    def _sweep(self, arguments: List[str]) -> Any:
        from labkit.tracking import search
        from labkit.tracking.summary import tally_text

        self._settings(arguments)
        study = self._open_study()
        where = search.storage_label(self.storage_spec)
        search.release_abandoned(study, self.stale_after_s)  # (each with a warning saying why)
        done = search.tally(study)
        if study.get_trials(deepcopy=False):
            log.info("continuing study %s (%s): %s", self.name, where, tally_text(done, self.n_trials, "done"))
        else:
            log.info("new study %s (%s): %d trials, %d at a time, pruner %s, reporting %s (%s)", self.name, where,
                     self.n_trials, self.batch, search.pruner_name(self.pruner), self.monitor, self.mode)
        if done["total"] >= self.n_trials:  # nothing is written: no sweep folder, no summary
            log.info("study %s has %d of %d trials: nothing to run (a larger hydra.sweeper.n_trials runs more)",
                     self.name, done["total"], self.n_trials)
            return []
        log.info("%s", search.size_line(self.n_trials - done["total"], bool(done["total"]), self.config, self.dists))
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        if not study.user_attrs.get("labkit_optimized_metric"):
            study.set_user_attr("labkit_optimized_metric", str(self.metric))
            study.set_user_attr("labkit_command", [str(a) for a in arguments])
        self.jobs: Dict[str, int] = {}
        returns = []
        while True:
            trials = self._ask(study)
            if not trials:
                break
            overrides = [self._overrides(t) for t in trials]
            try:
                with search.Heartbeat(study, trials, search.heartbeat_interval(self.stale_after_s)):
                    batch = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            except BaseException:  # Ctrl-C or a launcher failure: these trials will never be told
                for t in trials:
                    search.discard(study, t, "its batch was interrupted")
                raise
            for trial, ret in zip(trials, batch):
                self._tell(study, trial, ret)
            self.job_idx += len(batch)
            returns.append(batch)
        self._record(study)
        return returns

    def _ask(self, study) -> list:
        """The next batch: up to ``n_jobs`` new trials, as many as the study still lacks (every worker's running trials
        count, unless their worker is gone); trials a simultaneous worker made surplus are discarded."""
        from labkit.tracking import search

        search.release_abandoned(study, self.stale_after_s)  # a worker gone meanwhile, here or elsewhere
        missing = self.n_trials - search.tally(study)["total"]
        if missing <= 0:
            return []
        worker = search.worker_identity()
        trials = []
        for _ in range(min(self.batch, missing)):
            study.sampler = self._sampler(len(study.get_trials(deepcopy=False)))
            # the trial is born carrying its worker (a kill between ask() and a later set_user_attr left a running trial
            # that nobody could release): enqueued waiting with the attributes, then taken by ask() in one step; a
            # waiting trial left by a kill is taken by the next ask(), here or in another worker, and does not count
            study.enqueue_trial({}, user_attrs={search.WORKER_ATTR: worker, search.HEARTBEAT_ATTR: time.time()})
            trial = study.ask()
            if trial.user_attrs.get(search.WORKER_ATTR) != worker:  # another worker's enqueued trial came first
                trial.set_user_attr(search.WORKER_ATTR, worker)
                trial.set_user_attr(search.HEARTBEAT_ATTR, time.time())
            trials.append(trial)
        counted = sorted(t.number for t in study.get_trials(deepcopy=False) if search.counts(t))
        allowed = set(counted[: self.n_trials])
        kept = []
        for trial in trials:
            if trial.number not in allowed:
                search.discard(study, trial, "asked beyond n_trials while another worker asked too")
                continue
            study.sampler = self._sampler(trial.number)
            for name, dist in self.dists.items():
                search.suggest(trial, name, dist)
            kept.append(trial)
        return kept

    def _overrides(self, trial) -> Sequence[str]:
        """A trial's job: its parameters, the command line's other overrides, and the reporter callback."""
        from labkit.tracking import search

        reporter = {"_target_": REPORTER, "_recursive_": False, "storage": self.storage_spec, "study_name": self.name,
                    "trial": trial.number, "monitor": self.monitor, "mode": self.mode, "pruner": self.pruner,
                    "pruner_args": self.pruner_args or {}}
        params = [f"{k}={search.param_text(v)}" for k, v in trial.params.items()]
        return (*params, *self.fixed, f"++{REPORTER_KEY}={search.override_literal(reporter)}")

    def _job_dir(self, ret) -> Path:
        out = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir", default=None) if ret.hydra_cfg else None
        if out:
            return Path(str(out))
        num = OmegaConf.select(ret.hydra_cfg, "hydra.job.num", default=None) if ret.hydra_cfg else None
        return self.sweep_dir / str(num if num is not None else self.job_idx)

    def _tell(self, study, trial, ret) -> None:
        """Complete (its objective), pruned (metrics.json says so, or the reporter marked it) or failed."""
        from hydra.core.utils import JobStatus
        from optuna.trial import TrialState

        from labkit.adapters.hydra import failed_job_exception
        from labkit.adapters.optuna import stored_user_attrs
        from labkit.core.values import finite
        from labkit.run import directory
        from labkit.tracking import search

        run_dir = self._job_dir(ret)
        self.jobs[run_dir.name] = trial.number
        try:
            metrics = directory.read_metrics(run_dir, strict=True)
        except (OSError, ValueError):
            metrics = {}
        status = metrics.get("status")
        value = ret.return_value if ret.status == JobStatus.COMPLETED else None
        complete = finite(value)
        reported_pruned = stored_user_attrs(study, trial).get(search.PRUNED_ATTR)  # the job's reporter wrote it
        trial.set_user_attr(search.RUN_DIR_ATTR, str(run_dir))
        if status == "ok" and complete:
            study.tell(trial, float(value))
            log.info("trial %d (job %s): complete, %s = %.4g", trial.number, run_dir.name, self.metric, value)
            return
        if status == "pruned" or (status is None and reported_pruned is not None):
            epoch = metrics.get("stopped_at_epoch", reported_pruned)
            trial.set_user_attr(search.PRUNED_ATTR, epoch)
            study.tell(trial, state=TrialState.PRUNED)
            log.info("trial %d (job %s): pruned at epoch %s", trial.number, run_dir.name, epoch)
            return
        if metrics.get("error"):
            why = str(metrics["error"])
        elif ret.status != JobStatus.COMPLETED:
            exc = failed_job_exception(ret)
            why = f"{type(exc).__name__}: {exc}"
        elif status == "ok":
            why = f"it returned {value!r} for optimized_metric={self.metric}"
        else:
            why = f"no metrics.json in {run_dir}"
        trial.set_user_attr("labkit_error", why[:500])
        study.tell(trial, state=TrialState.FAIL)
        log.warning("trial %d (job %s): failed: %s", trial.number, run_dir.name, why)

    def _record(self, study) -> None:
        """``study.json`` (every trial of the study, this sweep's jobs, plots), ``optimization_results.yaml`` (the best
        trial) and Optuna's plots, beside the sweep summary."""
        from labkit.core.files import write_json
        from labkit.tracking import search
        from labkit.tracking.summary import STUDY_FILE

        best = search.best_trial(study)
        plots, notes = search.write_plots(study, self.sweep_dir)
        record = {"study_name": self.name, "storage": search.storage_label(self.storage_spec),
                  "direction": self.direction, "optimized_metric": str(self.metric), "monitor": self.monitor,
                  "pruner": search.pruner_name(self.pruner), "n_trials": self.n_trials, "tally": search.tally(study),
                  "jobs": self.jobs, "plots": plots, "notes": notes, "trials": search.study_rows(study),
                  "best": {"number": best.number, "value": best.value, "params": best.params} if best else None}
        write_json(self.sweep_dir / STUDY_FILE, record)
        results: Dict[str, Any] = {"name": "optuna", "study_name": self.name,
                                   "storage": search.storage_label(self.storage_spec)}
        if best is not None:
            results.update(best_params=dict(best.params), best_value=float(best.value), best_trial=best.number)
            log.info("best trial of study %s: %d, %s = %.4g, %s", self.name, best.number, self.metric, best.value,
                     " ".join(f"{k}={search.param_text(v)}" for k, v in best.params.items()))
        else:
            log.warning("study %s has no complete trial yet", self.name)
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / search.RESULTS_FILE)
        if best is not None and plots:
            self._send_plots(best, plots)

    def _send_plots(self, best, plots: Dict[str, str]) -> None:
        """Optuna's plots to the loggers of the best trial's run (TensorBoard images, artifacts of its MLflow run, W&B
        images), under ``search/``: the run a user opens in the tracking UI holds the search that found it."""
        from labkit.run import directory
        from labkit.tracking.reopen import send_pictures
        from labkit.tracking.search import RUN_DIR_ATTR

        run_dir = best.user_attrs.get(RUN_DIR_ATTR)
        if not run_dir or not directory.is_run_dir(run_dir):
            return
        try:
            saved = directory.load_config(run_dir)
            step = int(directory.read_metrics(run_dir).get("global_step") or 0)
            send_pictures(run_dir, saved, {f"search/{file}": self.sweep_dir / file for file in plots.values()},
                          step=step, what=f"plots of study {self.name}")
        except Exception as e:  # the plots are in the sweep folder: a logger's trouble is a warning
            log.warning("the study's plots could not be sent to the best trial's loggers (%s): %s", run_dir, e)
