"""Optuna searches (hparams_search=optuna, labkit's sweeper in hydra_plugins/labkit_optuna_sweeper): a study on disk
shared by several processes, continued after a kill, pruned trials recorded as pruned, bad input refused in one
paragraph before any trial; plus the pieces of labkit.tracking.search on their own. Tiny trials on the digits."""
from __future__ import annotations

import csv
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

from labkit.core.errors import ConfigError, RunStopped
from labkit.core.files import read_json, write_json
from labkit.tracking import search
from labkit.tracking.summary import SweepSummary, summarize_sweep

FAST = ["hparams_search=optuna", "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
        "test=false", "logger=none", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def _env(cwd: Path) -> dict:
    return dict(os.environ, LABKIT_LOG_DIR=str(cwd / "logs"), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
                MKL_NUM_THREADS="1")


def _train(args, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=_env(cwd),
                          capture_output=True, text=True, timeout=timeout)


def _start(args, cwd: Path, name: str) -> subprocess.Popen:
    out = open(cwd / f"{name}.out", "w")
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=_env(cwd), stdout=out,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _study(storage: Path, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=search.open_storage(str(storage)))


def _sweeps(cwd: Path) -> list[Path]:
    return sorted((cwd / "logs" / "multirun").iterdir())


def _csv(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


# ----- several processes, one study --------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_processes_on_one_study_run_its_trials_once_each(tmp_path):
    from optuna.trial import TrialState

    storage = tmp_path / "shared" / "study.log"
    args = [*FAST, f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=shared", "hydra.sweeper.n_trials=6"]
    procs = [_start(args, tmp_path, f"worker{i}") for i in range(2)]
    for i, p in enumerate(procs):
        assert p.wait(timeout=600) == 0, (tmp_path / f"worker{i}.out").read_text()[-3000:]

    trials = _study(storage, "shared").get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6 and all(t.state == TrialState.COMPLETE for t in trials if search.counts(t))
    # every trial ran in exactly one job (no duplicate, none lost), with its own parameters
    ran = [n for sweep in _sweeps(tmp_path) for n in read_json(sweep / "study.json")["jobs"].values()]
    assert sorted(ran) == sorted({t.number for t in complete})
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 6
    assert all(len(read_json(s / "study.json")["jobs"]) >= 1 for s in _sweeps(tmp_path))  # both workers took part
    for t in complete:  # what the study holds is what the run recorded
        metrics = read_json(Path(t.user_attrs[search.RUN_DIR_ATTR]) / "metrics.json")
        assert metrics["status"] == "ok" and metrics["best_val/acc"] == pytest.approx(t.value)
    # the worker that finished last summarises the whole study, the other worker's trials included
    last = max(_sweeps(tmp_path), key=lambda s: read_json(s / "study.json")["tally"]["complete"])
    md = (last / "summary.md").read_text()
    assert "6 of 6 trials (6 complete)" in md and "## Study shared: every trial" in md
    every = md.split("## Study shared: every trial")[1]
    assert "same in every trial: state=complete" in every  # said once above the table of the six trials
    assert len(re.findall(r"^\| \d+ +\| ", every, re.M)) == 6
    assert (last / "optuna_history.png").stat().st_size > 5000


# ----- a killed search continues ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_killed_search_continues_to_n_trials_with_the_same_command(tmp_path):
    from optuna.trial import TrialState

    p = _start([*FAST, "hydra.sweeper.n_trials=6"], tmp_path, "killed")
    deadline = time.time() + 300
    while not list((tmp_path / "logs").glob("multirun/*/1/metrics.json")):  # two trials done
        assert p.poll() is None and time.time() < deadline, (tmp_path / "killed.out").read_text()[-3000:]
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    (name_log,) = (tmp_path / "logs" / "studies").glob("classification-lenet-digits-*.log")  # the default storage
    name = name_log.stem

    r = _train([*FAST, "hydra.sweeper.n_trials=4"], tmp_path)  # the same command, n_trials counting the total
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    m = re.search(rf"continuing study {name} \(.*\): (\d) of 4 trials done", out)
    assert m and int(m.group(1)) in (2, 3), out[-3000:]
    more = 4 - int(m.group(1))  # announced before the first trial: how many more, how long each, on what
    assert f"search: {more} more trial{'s' if more > 1 else ''} x 1 epoch each on digits" in out, out[-3000:]
    trials = _study(name_log, name).get_trials()
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 4 and not [t for t in trials if t.state == TrialState.RUNNING]
    abandoned = [t for t in trials if search.ABANDONED_ATTR in t.user_attrs]
    assert len(abandoned) == len(trials) - 4  # the trial the kill interrupted: failed, not counted
    for t in abandoned:
        assert t.state == TrialState.FAIL and f"trial {t.number} was left running (process " in out
        assert re.search(rf"trial {t.number} was left running \(process \d+ on .* is gone\): marked failed", out)

    sweeps = _sweeps(tmp_path)
    r = _train([*FAST, "hydra.sweeper.n_trials=4"], tmp_path)
    assert r.returncode == 0 and f"study {name} has 4 of 4 trials: nothing to run" in r.stdout + r.stderr
    assert _sweeps(tmp_path) == sweeps  # a complete study writes nothing: no empty sweep folder (issue 32)
    assert "search: " not in r.stdout + r.stderr


# ----- pruning ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_pruned_trial_is_recorded_as_pruned_and_does_not_fail_the_sweep(tmp_path):
    from optuna.trial import TrialState

    # the threshold pruner with lower=2 prunes every trial after its first epoch (val/acc <= 1): deterministic
    r = _train([*FAST, "trainer.max_epochs=3", "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner=threshold",
                "hydra.sweeper.pruner_args={lower:2.0}"], tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    # the search's size is said before its first trial, with the keys that change it (issue 32)
    said = "search: 2 trials x 3 epochs each on digits (hydra.sweeper.n_trials / trainer.max_epochs to change)"
    assert said in out and out.index(said) < out.index("trial 0 (job 0)"), out[-3000:]
    (sweep,) = _sweeps(tmp_path)
    metrics = read_json(sweep / "0" / "metrics.json")
    assert metrics["status"] == "pruned" and metrics["stopped_at_epoch"] == 0
    assert "TrialPruned" in metrics["error"] and metrics.get("traceback") is None
    assert "job pruned at epoch 0" in out and "trial 0 (job 0): pruned at epoch 0" in out
    table = _csv(sweep / "summary.csv")
    assert [(row["trial"], row["status"], row["epochs"], row["error"]) for row in table] == [
        ("0", "pruned", "1", ""), ("1", "pruned", "1", "")]
    md = (sweep / "summary.md").read_text()
    assert "jobs: 2 (2 pruned)" in md and "2 of 2 trials (2 pruned)" in md and "no complete trial" in md
    record = read_json(sweep / "study.json")
    study = _study(Path(record["storage"]), record["study_name"])
    assert [t.state for t in study.get_trials()] == [TrialState.PRUNED] * 2
    assert all(t.intermediate_values == {0: pytest.approx(t.value)} for t in study.get_trials())


@pytest.mark.slow
def test_the_study_plots_reach_the_best_trials_loggers(tmp_path):
    """Issue 34: Optuna's plots go to the best trial's TensorBoard (images under search/), not only the sweep folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = [a for a in FAST if a != "logger=none"] + ["logger=tensorboard", "hydra.sweeper.n_trials=2",
                                                      "hydra.sweeper.pruner=none"]
    r = _train(args, tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    (sweep,) = _sweeps(tmp_path)
    record = read_json(sweep / "study.json")
    best = Path(record["trials"][record["best"]["number"]]["run_dir"])
    assert set(record["plots"]) >= {"history", "slice"}
    (folder,) = {p.parent for p in (best / "tensorboard").rglob("events.out.tfevents.*")}  # the trial's own folder
    events = EventAccumulator(str(folder), size_guidance={"images": 0}).Reload()
    tags = set(events.Tags()["images"])
    assert {f"search/{file[:-len('.png')]}" for file in record["plots"].values()} <= tags, tags
    assert "the run's loggers got the plots of study" in out


# ----- bad input: one paragraph, before any trial -------------------------------------------------------------------
@pytest.mark.parametrize("override, expected", [
    ("hydra.sweeper.storage={tmp}/a_file/study.log", "a_file is a file, not a folder"),
    ("hydra.sweeper.storage=sqlite:////nonexistent-labkit-dir/x.db", "cannot be opened: OperationalError"),
    ("task.optimizer.lr=interval(1,0.1)", "the interval is inverted (1.0 >= 0.1)"),
    ("hydra.sweeper.pruner=medain", "Did you mean 'median'?"),
    ("hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials=0 is invalid: it must be a positive integer"),
    ("hydra.sweeper.stale_after_s=0", "hydra.sweeper.stale_after_s=0.0 is invalid: it must be a number > 0"),
])
@pytest.mark.slow
def test_bad_search_input_is_one_paragraph_before_any_trial(tmp_path, override, expected):
    (tmp_path / "a_file").write_text("")
    r = _train([*FAST, override.format(tmp=tmp_path)], tmp_path, timeout=120)
    assert r.returncode == 1, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert not list((tmp_path / "logs").glob("multirun/*/0")) and not list((tmp_path / "logs").glob("studies/*"))


# ----- the pieces ---------------------------------------------------------------------------------------------------
def _local_study(tmp_path: Path):
    import optuna

    return optuna.create_study(study_name="s", storage=search.open_storage(str(tmp_path / "study.log")))


def test_a_trial_of_another_machine_is_released_when_its_heartbeat_stops(tmp_path):
    from optuna.trial import TrialState

    study = _local_study(tmp_path)
    far = {"host": "another-machine", "pid": 4242, "start": "x"}  # its process cannot be looked up from here
    silent, beating, unstamped = study.ask(), study.ask(), study.ask()
    for t in (silent, beating, unstamped):
        t.set_user_attr(search.WORKER_ATTR, far)
    now = time.time()
    silent.set_user_attr(search.HEARTBEAT_ATTR, now - 1000)
    beating.set_user_attr(search.HEARTBEAT_ATTR, now - 30)
    # unstamped: a worker of a labkit without heartbeats, left alone (it may well be training)
    assert search.release_abandoned(study, 900, now=now) == [silent.number]
    released = study.trials[silent.number]
    assert released.state == TrialState.FAIL and not search.counts(released)
    assert "no heartbeat from process 4242 on another-machine for 1000 s (hydra.sweeper.stale_after_s=900)" in \
        released.user_attrs[search.ABANDONED_ATTR]
    assert search.tally(study) == {"complete": 0, "pruned": 0, "failed": 0, "running": 2, "total": 2,
                                   "abandoned": 1, "discarded": 0}
    assert search.release_abandoned(study, None, now=now + 10**6) == []  # stale_after_s=null: never
    assert search.release_abandoned(study, 900, now=now + 10**6) == [beating.number]
    assert study.trials[unstamped.number].state == TrialState.RUNNING


def test_a_sweeper_killed_right_after_asking_leaves_a_trial_that_the_next_worker_releases(tmp_path, monkeypatch):
    """CI once saw a kill land between ``study.ask()`` and the worker's ``set_user_attr``: the trial stayed running,
    without an owner, and counted towards n_trials for ever. The trial is now born carrying its worker."""
    from optuna.trial import TrialState

    from hydra_plugins.labkit_optuna_sweeper.labkit_optuna_sweeper import LabkitOptunaSweeper

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process id that no longer runs: the killed sweeper
    dead = {"host": search.socket.gethostname(), "pid": gone.pid, "start": None}
    monkeypatch.setattr(search, "worker_identity", lambda: dead)
    study = _local_study(tmp_path)

    class Killed(BaseException):
        pass

    asked = study.ask

    def ask_then_die(*a, **k):
        asked(*a, **k)
        raise Killed  # SIGKILL right after the trial turned running: nothing after ask() ran

    monkeypatch.setattr(study, "ask", ask_then_die)
    sweeper = object.__new__(LabkitOptunaSweeper)
    sweeper.__dict__.update(stale_after_s=900.0, n_trials=2, batch=1, dists={}, sampler_cfg=None, seed=0)
    with pytest.raises(Killed):
        sweeper._ask(study)
    (orphan,) = study.get_trials(states=(TrialState.RUNNING,))
    assert orphan.user_attrs[search.WORKER_ATTR] == dead
    assert search.release_abandoned(study) == [orphan.number]  # the next worker finds the process gone
    assert search.tally(study)["total"] == 0


def test_the_heartbeat_stamps_a_batch_while_it_runs_and_skips_a_trial_told_meanwhile(tmp_path):
    study = _local_study(tmp_path)
    running, told = study.ask(), study.ask()
    study.tell(told, 1.0)
    with search.Heartbeat(study, [running, told], interval=0.02):
        first = study.trials[running.number].user_attrs[search.HEARTBEAT_ATTR]  # stamped on entry
        deadline = time.time() + 10
        while study.trials[running.number].user_attrs[search.HEARTBEAT_ATTR] == first:
            assert time.time() < deadline, "the heartbeat thread stamped nothing"
            time.sleep(0.02)
    last = study.trials[running.number].user_attrs[search.HEARTBEAT_ATTR]
    time.sleep(0.1)
    assert study.trials[running.number].user_attrs[search.HEARTBEAT_ATTR] == last  # stopped with the batch
    assert search.HEARTBEAT_ATTR not in study.trials[told.number].user_attrs
    assert search.heartbeat_interval(900) == 60 and search.heartbeat_interval(100) == 20


def test_the_tally_names_failed_trials_counted_or_not(tmp_path):
    """A failed trial is in the sweep line, also one that does not count towards n_trials (its process was gone):
    ``18 of 18 trials (13 complete, 5 pruned)`` hid it (issue 32)."""
    import optuna
    from optuna.trial import TrialState

    from labkit.tracking.summary import study_lines, tally_text

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for state in ("complete", "complete", "pruned", "failed", "abandoned", "discarded"):
        trial = study.ask()
        if state == "complete":
            study.tell(trial, 0.5)
        elif state == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        else:
            if state != "failed":
                trial.set_user_attr(search.ABANDONED_ATTR if state == "abandoned" else search.DISCARDED_ATTR, "why")
            study.tell(trial, state=TrialState.FAIL)
    done = search.tally(study)
    assert done == {"complete": 2, "pruned": 1, "failed": 1, "running": 0, "total": 4, "abandoned": 1,
                    "discarded": 1}
    text = tally_text(done, 4)
    assert text == ("4 of 4 trials (2 complete, 1 pruned, 1 failed), and not counted: 1 failed as their process was "
                    "gone, 1 discarded unrun (asked beyond n_trials)")
    assert tally_text(done, 4, "done").startswith("4 of 4 trials done (2 complete")
    line = study_lines({"study_name": "s", "storage": "x.log", "tally": done, "n_trials": 4, "pruner": "median",
                        "monitor": "val/acc"})[0]
    assert "1 failed as their process was gone" in line and len(line) <= 200


def test_the_search_space_reads_hydras_sweep_syntax():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    params = {"task.optimizer.lr": "tag(log, interval(0.0005, 0.1))", "task": {"optimizer": {"momentum":
                                                                                              "interval(0.5, 0.99)"}},
              "data.batch_size": "choice(32, 64, 128)", "trainer.max_epochs": 3}
    dists, fixed = search.search_space(params, ["model=lenet", "data.batch_size=range(16, 80, 16)",
                                                "seed=int(interval(0, 9))"])
    assert dists["task.optimizer.lr"] == FloatDistribution(0.0005, 0.1, log=True)
    assert dists["task.optimizer.momentum"] == FloatDistribution(0.5, 0.99)
    assert dists["data.batch_size"] == IntDistribution(16, 64, step=16)  # the command line wins; range's stop excluded
    assert dists["seed"] == IntDistribution(0, 9)
    assert fixed == ["trainer.max_epochs=3", "model=lenet"]
    assert search.search_space({"m": "choice(lenet, mlp)"})[0]["m"] == CategoricalDistribution(["lenet", "mlp"])
    for bad, why in [("interval(1, 0.1)", "inverted"), ("interval(0.5, 0.5)", "empty"), ("range(5, 1)", "empty"),
                     ("tag(log, interval(0, 1))", "log-scaled interval needs low > 0"), ("choice(", "cannot be read")]:
        with pytest.raises(ConfigError, match=re.escape(why)):
            search.search_space({"task.optimizer.lr": bad})


def test_pruners_by_name_with_labkits_defaults_and_one_paragraph_otherwise():
    import optuna

    median = search.make_pruner("median")
    assert isinstance(median, optuna.pruners.MedianPruner) and median._n_startup_trials == 5
    assert median._n_warmup_steps == 1
    assert search.make_pruner("median", {"n_startup_trials": 2})._n_startup_trials == 2
    assert isinstance(search.make_pruner(None), optuna.pruners.NopPruner)
    assert isinstance(search.make_pruner("hyperband"), optuna.pruners.HyperbandPruner)
    halving = search.make_pruner({"_target_": "optuna.pruners.SuccessiveHalvingPruner", "min_resource": 2})
    assert isinstance(halving, optuna.pruners.SuccessiveHalvingPruner) and halving._min_resource == 2
    with pytest.raises(ConfigError, match="hydra.sweeper.pruner='hyperbnd' is invalid.*Did you mean 'hyperband'"):
        search.make_pruner("hyperbnd")
    with pytest.raises(ConfigError, match=r"pruner_args=\{'foo': 1\} is invalid for the median pruner"):
        search.make_pruner("median", {"foo": 1})


def test_the_reporter_override_survives_hydras_parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    value = {"_target_": search.TrialReporter.__module__ + ".TrialReporter",
             "storage": "/data/it's a \"lab\"/x y\\z.log", "study_name": "s-1", "trial": 3, "monitor": "val/acc",
             "mode": None, "pruner": {"_target_": "optuna.pruners.ThresholdPruner", "lower": 0.5},
             "pruner_args": {}}
    parsed = OverridesParser.create().parse_overrides([f"++callbacks.optuna_trial={search.override_literal(value)}"])
    assert parsed[0].value() == value


def test_the_default_study_name_is_the_same_for_the_same_search_only():
    dists = search.search_space({"lr": "interval(0.1, 1)"})[0]
    name = search.default_study_name("classification-lenet-digits", ["hparams_search=optuna", "trainer.max_epochs=3"],
                                     dists, "best_val/acc", "maximize")
    assert re.fullmatch(r"classification-lenet-digits-[0-9a-f]{8}", name)
    # settings that only drive the search (logger, workers, progress bar) keep the study; the experiment does not
    assert name == search.default_study_name("classification-lenet-digits", [
        "trainer.max_epochs=3", "logger=csv", "data.num_workers=2", "trainer.enable_progress_bar=false"], dists,
        "best_val/acc", "maximize")
    assert name != search.default_study_name("classification-lenet-digits", ["trainer.max_epochs=4"], dists,
                                             "best_val/acc", "maximize")
    assert name != search.default_study_name("classification-lenet-digits", ["trainer.max_epochs=3"],
                                             search.search_space({"lr": "interval(0.1, 2)"})[0], "best_val/acc",
                                             "maximize")


def test_trial_pruned_is_a_run_stopped_with_its_status():
    e = search.TrialPruned("stopped", epoch=4)
    assert isinstance(e, RunStopped) and e.status == "pruned" and e.epoch == 4


def test_a_search_summary_lists_trials_states_and_pruned_jobs_do_not_fail_the_sweep(tmp_path):
    from test_summary import write_job

    sweep = tmp_path / "multirun" / "2026-12-01_10-00-00_abcdef"
    sweep.mkdir(parents=True)
    reporter = "++callbacks.optuna_trial={_target_:'labkit.callbacks.TrialReporter',trial:%d}"
    ok = {"status": "ok", "epochs": 3, "best_val/acc": 0.9}
    write_job(sweep, 0, ["task.optimizer.lr=0.01", reporter % 4], ok, optimized_metric="best_val/acc")
    write_job(sweep, 1, ["task.optimizer.lr=0.05", reporter % 6],
              {"status": "pruned", "stopped_at_epoch": 1, "error": "TrialPruned: trial 6: stopped"},
              optimized_metric="best_val/acc")
    trials = [{"number": 4, "state": "complete", "value": 0.9, "params": {"task.optimizer.lr": 0.01}, "epochs": 3,
               "run_dir": str(sweep / "0"), "counts": True, "note": ""},
              {"number": 5, "state": "complete", "value": 0.95, "params": {"task.optimizer.lr": 0.02}, "epochs": 3,
               "run_dir": str(sweep.parent / "other" / "0"), "counts": True, "note": ""},
              {"number": 6, "state": "pruned", "value": 0.1, "params": {"task.optimizer.lr": 0.05}, "epochs": 2,
               "run_dir": str(sweep / "1"), "counts": True, "note": ""}]
    write_json(sweep / "study.json", {
        "study_name": "s", "storage": "/x/s.log", "direction": "maximize", "optimized_metric": "best_val/acc",
        "monitor": "val/acc", "pruner": "median", "n_trials": 3, "jobs": {"0": 4, "1": 6}, "trials": trials,
        "tally": {"complete": 2, "pruned": 1, "failed": 0, "running": 0, "total": 3}, "plots": {},
        "notes": ["parameter importances: skipped"], "best": {"number": 5, "value": 0.95,
                                                              "params": {"task.optimizer.lr": 0.02}}})
    rows = summarize_sweep(sweep)
    assert [(r["job"], r["trial"], r["status"], r["epochs"], r["error"]) for r in rows] == [
        ("0", 4, "ok", 3, ""), ("1", 6, "pruned", 2, "")]
    table = _csv(sweep / "summary.csv")
    assert "callbacks.optuna_trial" not in table[0] and "optuna_trial" not in table[0]["overrides"]
    md = (sweep / "summary.md").read_text()
    assert "3 of 3 trials (2 complete, 1 pruned)" in md and "best trial: 5, best_val/acc = 0.95" in md
    cells = re.sub(r" +", " ", md)  # the table's cells are padded to their column's width
    # trial, its run (a job of this sweep by its number, another worker's relative to the sweeps' folder), parameters
    assert "| 5 | other/0 | 0.02 | complete | 0.95 | 3 |" in cells and "| 6 | 1 | 0.05 | pruned | | 2 |" in cells
    assert "parameter importances: skipped" in md

    class Hydra:
        class hydra:
            class sweep:
                dir = str(sweep)

    SweepSummary().on_multirun_end(Hydra)  # pruned is not failed: no SystemExit
    write_job(sweep, 2, ["task.optimizer.lr=0.09"], {"status": "failed", "error": "ValueError: x"})
    with pytest.raises(SystemExit, match="1 of 3 sweep jobs failed"):
        SweepSummary().on_multirun_end(Hydra)


def test_a_run_whose_trial_was_closed_meanwhile_goes_on_unreported(tmp_path, caplog):
    import optuna
    from optuna.trial import TrialState

    study = _local_study(tmp_path)
    open_trial, closed = study.ask(), study.ask()
    study.tell(closed, state=TrialState.FAIL)  # e.g. released by another worker while its sweeper was silent
    reporters = {}
    for trial in (open_trial, closed):
        r = search.TrialReporter(str(tmp_path / "study.log"), "s", trial.number, monitor="val/acc", mode="max")
        r._trial = optuna.trial.Trial(study, trial._trial_id)  # what setup() does in the job
        reporters[trial.number] = r
    assert reporters[open_trial.number]._report(0.5, 0) is False
    assert study.trials[open_trial.number].intermediate_values == {0: 0.5}
    assert reporters[closed.number]._report(0.5, 0) is False  # no UpdateFinishedTrialError out of the callback
    assert reporters[closed.number]._trial is None and f"trial {closed.number} was closed in the study" in caplog.text
