"""Shared stores under parallel writers (issue 31, item 5): MLflow's SQLite store written by a sweep's parallel jobs,
and an Optuna journal file whose last line a killed worker tore."""
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from labkit import loggers
from labkit.core.errors import ConfigError
from labkit.tracking import search


# ----- MLflow: a SQLite store shared by parallel jobs ----------------------------------------------------------------
@pytest.mark.slow
def test_four_mlflow_jobs_on_two_workers_lose_no_run_and_no_metric(tmp_path):
    """Two jobs start together on an empty store: before, both ran MLflow's migrations on the new database at once
    (``table _alembic_tmp_metrics already exists``) and every job failed. Now each job is one finished MLflow run, and
    its figures in the store are those of its own metrics.json."""
    from mlflow.tracking import MlflowClient

    lrs = ["0.01", "0.02", "0.03", "0.04"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=joblib",
                        "hydra.launcher.n_jobs=2", "logger=mlflow", "logger.mlflow.log_model=false",
                        "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
                        "test=false", "trainer.enable_progress_bar=false",
                        f"task.optimizer.lr={','.join(lrs)}", f"paths.log_dir={tmp_path / 'logs'}"],
                       cwd=tmp_path, env=dict(env, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "multirun").iterdir()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'logs' / 'mlruns' / 'mlflow.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name == "labkit"]
    runs = {run.data.tags["run_dir"]: run for run in client.search_runs([exp.experiment_id])}
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 4 and sorted(runs) == [str(job.resolve()) for job in jobs]
    for job in jobs:
        run, figures = runs[str(job.resolve())], json.loads((job / "metrics.json").read_text())
        assert figures["status"] == "ok" and run.info.status == "FINISHED"
        assert run.data.params["config/task/optimizer/lr"] in lrs
        for key in ("val/loss", "val/acc", "train/acc"):
            (point,) = client.get_metric_history(run.info.run_id, key)  # one epoch: one value, the job's own
            assert point.value == pytest.approx(figures[key])
        assert run.data.metrics["final/params"] == figures["params"]
    assert len({run.data.params["config/task/optimizer/lr"] for run in runs.values()}) == 4


def test_a_write_waits_out_another_writers_lock_then_goes_through(tmp_path):
    """A transaction refused at once because another process holds the database (SQLite does not wait when waiting
    could deadlock) is tried again until it goes through, within the busy timeout."""
    db = tmp_path / "store.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("create table t (x)")
    holder.execute("begin exclusive")  # another job, in the middle of its write
    writer = sqlite3.connect(db, timeout=0, isolation_level=None)
    calls = []

    def write():
        calls.append(time.monotonic())
        if len(calls) == 3:
            holder.execute("commit")  # the other job is done
        writer.execute("insert into t values (1)")
        return "written"

    assert loggers.retry_locked(write, timeout_s=10) == "written" and len(calls) == 3  # two refused, one through
    assert writer.execute("select count(*) from t").fetchone() == (1,)  # once, not once per try


def test_a_lock_held_past_the_busy_timeout_or_another_error_is_raised(tmp_path):
    db = tmp_path / "store.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("create table t (x)")
    holder.execute("begin exclusive")
    writer = sqlite3.connect(db, timeout=0, isolation_level=None)
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        loggers.retry_locked(lambda: writer.execute("insert into t values (1)"), timeout_s=0.5)
    assert 0.2 < time.monotonic() - started < 3
    calls = []

    def broken():
        calls.append(1)
        raise sqlite3.OperationalError("no such table: u")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        loggers.retry_locked(broken, timeout_s=10)
    assert calls == [1]  # not a lock: no second try


def test_the_sqlite_uri_carries_the_busy_timeout(tmp_path):
    uri, db = loggers.sqlite_store(f"sqlite:///{tmp_path}/a/../b/m.db", 60.0)
    assert db == tmp_path / "b" / "m.db" and db.parent.is_dir() and uri == f"sqlite:///{db}?timeout=60"
    assert loggers.sqlite_store(f"sqlite:///{db}?timeout=5", 60.0)[0] == f"sqlite:///{db}?timeout=5"  # the user's
    assert loggers.sqlite_store(f"sqlite:///{db}", None)[0] == f"sqlite:///{db}"
    with pytest.raises(ConfigError, match=r"logger.mlflow.busy_timeout_s=0 is invalid: .*a number > 0"):
        loggers.MLFlowLogger(tracking_uri=f"sqlite:///{db}", busy_timeout_s=0)  # its schema's rule, before anything


# ----- Optuna: a journal file torn by a killed worker ----------------------------------------------------------------
def _study(path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name="s", storage=search.open_storage(str(path)))


def _search(path, n):
    _study(path).optimize(lambda t: t.suggest_float("x", 0, 1) ** 2, n_trials=n)


@pytest.mark.parametrize("torn", ['{"op_code":4,"worker_id":"dead","trial_id":', '{"op_code":0,"study_name":"t","d'])
def test_a_torn_last_journal_line_is_read_past_with_one_warning_and_the_search_continues(tmp_path, caplog, torn):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = tmp_path / "study.log"
    optuna.create_study(study_name="s", storage=search.open_storage(str(path)))
    _search(path, 2)
    good = path.read_bytes()
    with open(path, "ab") as f:  # a worker killed in the middle of its append
        f.write(torn.encode())
    with caplog.at_level(logging.WARNING, logger="labkit"):
        assert len(_study(path).trials) == 2
        _search(path, 2)  # the search continues: its appends land on whole lines
        _search(path, 1)
    warned = [r.getMessage() for r in caplog.records if "torn line" in r.getMessage()]
    assert len(warned) == 1 and str(path) in warned[0] and "was removed" in warned[0], warned
    assert path.read_bytes().startswith(good) and path.read_bytes().endswith(b"\n")
    plain = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))  # Optuna's reader
    assert len(plain.trials) == 5 and all(t.state.name == "COMPLETE" for t in plain.trials)


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path, caplog):
    import optuna

    path = tmp_path / "study.log"
    optuna.create_study(study_name="s", storage=search.open_storage(str(path)))
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]) + lines[-1].rstrip(b"\n"))  # the writer died before its newline
    with caplog.at_level(logging.WARNING, logger="labkit"):
        _search(path, 1)
    assert any("newline, which was added" in r.getMessage() for r in caplog.records)
    assert path.read_bytes().startswith(b"".join(lines)) and len(_study(path).trials) == 1


def test_a_journal_append_on_a_torn_line_corrupts_optunas_own_backend(tmp_path):
    """Why the repair: with Optuna's backend alone, the next append is glued onto the torn line: that record is lost
    (the study cannot even create its trial) and the file holds a line that no reader can parse."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = tmp_path / "study.log"

    def search_once():
        study = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)

    optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    search_once()
    with open(path, "ab") as f:
        f.write(b'{"op_code":4,"worker_id":"dead","trial_id":')
    with pytest.raises(Exception):  # noqa: B017  (how Optuna fails varies with its version)
        search_once()

    def parses(line):
        try:
            return isinstance(json.loads(line), dict)
        except ValueError:
            return False

    (glued,) = [line for line in path.read_bytes().splitlines() if not parses(line)]
    assert glued.startswith(b'{"op_code":4,"worker_id":"dead","trial_id":{"op_code"')
