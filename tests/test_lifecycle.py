"""The run core: a plan made once, one process per run directory, and the seams between plan, run and records.

Runs go through train.py's own ``cli(argv)`` in-process (the command line's code path) or, where two processes
must meet, through real subprocesses."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from labkit.cli.train import cli
from labkit.core import files
from labkit.core.errors import IncompatibleError
from labkit.run import directory
from labkit.run.directory import RunLockedError, claim

FAST = ("trainer.accelerator=cpu", "trainer.devices=1", "trainer.enable_progress_bar=false",
        "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2")


def _args(tmp: Path, *args: str) -> list[str]:
    flags = [a for a in args if a.startswith("-")]  # Hydra's flags (-m) before the overrides
    return [*flags, f"paths.log_dir={tmp / 'logs'}", f"paths.data_dir={tmp / 'data'}", *FAST,
            *[a for a in args if not a.startswith("-")]]


def _train(tmp: Path, *args: str) -> int:
    """``python train.py <args>`` in-process; its exit status."""
    try:
        cli(_args(tmp, *args))
    except SystemExit as e:  # an exit status, or a message (exit status 1)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


def _runs(tmp: Path) -> list[Path]:
    return sorted(p for p in (tmp / "logs" / "runs").iterdir() if p.is_dir())


def _metrics(run: Path) -> dict:
    return files.read_json(run / "metrics.json")


@pytest.fixture
def finished(tmp_path) -> Path:
    """A finished one-epoch run without a logger."""
    assert _train(tmp_path, "trainer.max_epochs=1", "logger=none") == 0
    (run,) = _runs(tmp_path)
    return run


# ----- seams --------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("group", ["logger=csv", "logger=many", "callbacks=early_stopping"])
def test_resume_with_a_config_group_override_finishes_and_records_no_failure(finished, tmp_path, group):
    """README's own example: resume=<run> trainer.max_epochs=N logger=many (a group choice, not a key=value)."""
    try:
        assert _train(tmp_path, f"resume={finished}", "trainer.max_epochs=2", group) == 0
    finally:
        if "wandb" in sys.modules:  # logger=many: close the W&B run, as the end of train.py's process does
            sys.modules["wandb"].finish()
    metrics = _metrics(finished)
    assert metrics["status"] == "ok" and metrics["epochs"] == 2 and metrics["resumes"] == 1
    assert not (finished / "resume_failed.json").exists()
    history = files.read_json(finished / "metrics.json")
    assert history["status"] == "ok"
    saved = (finished / "config.yaml").read_text()
    key = group.split("=")[0]
    said = {"logger=csv": "resuming with logger: none -> csv", "logger=many": "none -> tensorboard, csv, mlflow, wandb",
            "callbacks=early_stopping": "resuming with callbacks: "}[group]
    assert said in (finished / "train.log").read_text()  # a readable line, not the nodes' dicts
    assert f"    {key}:\n      from:" in saved  # the resume_history names the group that changed
    if group.startswith("logger=csv") or group == "logger=many":
        with open(finished / "csv" / "metrics.csv") as f:
            assert [r["epoch"] for r in csv.DictReader(f) if r.get("val/loss")] == ["1"]


@pytest.mark.slow
def test_metrics_carry_the_wall_time_of_every_session_and_compare_shows_the_total(finished, tmp_path):
    from labkit.tracking.compare import compare

    first = _metrics(finished)
    assert first["wall_time_s"] == pytest.approx(first["session_wall_time_s"], abs=1e-3)
    assert first["test/error"] == pytest.approx(1.0 - first["test/acc"])  # one unit: fractions, like the accuracy
    assert _train(tmp_path, f"resume={finished}", "trainer.max_epochs=2") == 0
    second = _metrics(finished)
    assert second["session_wall_time_s"] < second["wall_time_s"]
    assert second["wall_time_s"] == pytest.approx(first["wall_time_s"] + second["session_wall_time_s"], abs=1e-6)
    table = compare([str(finished)], out=tmp_path / "cmp", echo=False)
    assert table["rows"][0]["wall_time_s"] == pytest.approx(second["wall_time_s"])


def test_a_killed_session_counts_up_to_its_last_checkpoint(tmp_path):
    """A session killed after its checkpoints: the resume starts its clock from the checkpoint's total."""
    from labkit.callbacks import RunClock

    clock = RunClock()
    clock.load_state_dict({"wall_time_s": 100.0})
    session, total = clock.totals()
    assert total == pytest.approx(100.0 + session) and session < 5
    assert clock.totals(recorded_before=150.0)[1] == pytest.approx(150.0, abs=5)
    assert clock.state_dict()["wall_time_s"] >= 100.0


@pytest.mark.slow
def test_a_sweep_job_refused_by_its_own_config_is_failed_with_its_error_in_the_summary(tmp_path):
    code = _train(tmp_path, "-m", "task.optimizer.lr=0.01,-1", "trainer.max_epochs=1", "logger=none")
    assert code != 0  # one job failed
    (sweep,) = (tmp_path / "logs" / "multirun").iterdir()
    with open(sweep / "summary.csv") as f:
        rows = {r["job"]: r for r in csv.DictReader(f)}
    assert rows["0"]["status"] == "ok"
    assert rows["1"]["status"] == "failed" and "task.optimizer.lr=-1" in rows["1"]["error"]
    assert files.read_json(sweep / "1" / "metrics.json")["refused"] is True


def test_an_autoencoder_under_the_classification_task_is_told_to_use_an_autoencoder_task(cfg_factory):
    from labkit.run.lifecycle import execute

    with pytest.raises(IncompatibleError, match="task=autoencoder"):
        execute(cfg_factory("model=conv_autoencoder", "logger=none"))


@pytest.mark.slow
def test_resume_true_takes_the_newest_run_with_a_checkpoint_and_says_which_it_skipped(finished, tmp_path):
    # a newer run that never saved a checkpoint (here: zero epochs; in life, one killed or failed in its first epoch)
    assert _train(tmp_path, "trainer.max_epochs=0", "logger=none") == 0
    (broken,) = [r for r in _runs(tmp_path) if r != finished]  # often started in the same second as the first
    assert (broken / "config.yaml").is_file() and not directory.has_checkpoint(broken)
    before = sorted(p.name for p in broken.rglob("*"))
    assert _train(tmp_path, "resume=true", "trainer.max_epochs=2") == 0
    assert _metrics(finished)["epochs"] == 2
    assert f"skipped {broken.name} (it has no checkpoint to resume)" in (finished / "train.log").read_text()
    assert sorted(p.name for p in broken.rglob("*")) == before


# ----- a plan made once ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_each_checkpoint_on_the_command_line_is_read_once_to_check_and_once_to_use(finished, tmp_path, monkeypatch):
    import labkit.core.safe_load as safe_load
    import labkit.models.init as init

    reads: list[str] = []
    original = safe_load.load_checkpoint

    def counting(path, *a, **k):
        reads.append(Path(path).name)
        return original(path, *a, **k)

    monkeypatch.setattr(safe_load, "load_checkpoint", counting)
    monkeypatch.setattr(init, "load_checkpoint", counting)
    best = finished / _metrics(finished)["best_checkpoint"]
    assert _train(tmp_path, f"init_from={finished}", "trainer.max_epochs=1", "logger=none") == 0
    assert reads.count(best.name) == 2  # the plan's check, then the copy into the new network
    reads.clear()
    assert _train(tmp_path, f"resume={finished}", "trainer.max_epochs=2", "logger=none") == 0
    assert reads.count("last.ckpt") == 1  # the plan's check (Lightning's fit reads it for use)


def test_the_plan_is_frozen_and_refuses_before_anything_is_written(cfg_factory, tmp_path):
    from omegaconf.errors import ReadonlyConfigError

    from labkit.run import plan as planning

    made = planning.make(cfg_factory("trainer.max_epochs=1"), ["trainer.max_epochs=1"])
    with pytest.raises(ReadonlyConfigError):
        made.cfg.trainer.max_epochs = 5
    with pytest.raises(Exception, match="batch_size"):
        planning.make(cfg_factory("data.batch_size=0"), ["data.batch_size=0"])
    assert not (tmp_path / "logs").exists() and not (tmp_path / "run").exists()


# ----- one process per run directory --------------------------------------------------------------------------------
def test_a_second_claim_is_refused_naming_the_holder_and_a_released_one_is_free(tmp_path):
    with claim(tmp_path / "run"):
        holder = json.loads((tmp_path / "run" / directory.LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid()
        with pytest.raises(RunLockedError, match=rf"being written by process {os.getpid()} on "):
            with claim(tmp_path / "run"):
                pass
        with pytest.raises(RunLockedError):
            directory.check_unclaimed(tmp_path / "run")
    directory.check_unclaimed(tmp_path / "run")
    with claim(tmp_path / "run"):
        pass


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_a_second_resume_of_a_running_run_is_refused_and_a_killed_holder_is_taken_over(finished, tmp_path):
    lock = finished / directory.LOCK_FILE
    train_py = [sys.executable, str(ROOT / "train.py")]
    first = subprocess.Popen([*train_py, f"resume={finished}", "trainer.max_epochs=100000"], cwd=tmp_path,
                             env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (lock.is_file() and lock.read_text()):
            time.sleep(0.2)
        assert json.loads(lock.read_text())["pid"] == first.pid
        hydra_before = sorted(p.name for p in (finished / ".hydra").iterdir())
        second = subprocess.run([*train_py, f"resume={finished}", "trainer.max_epochs=100001"], cwd=tmp_path,
                                env=_env(), capture_output=True, text=True, timeout=120)
        assert second.returncode == 1, second.stderr
        assert f"is being written by process {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert sorted(p.name for p in (finished / ".hydra").iterdir()) == hydra_before  # nothing written
        assert "100001" not in (finished / "train.log").read_text()
    finally:
        first.kill()  # SIGKILL: no chance to release anything
        first.wait()
    done = int(torch.load(finished / "checkpoints" / "last.ckpt", weights_only=False)["epoch"]) + 1
    third = subprocess.run([*train_py, f"resume={finished}", f"trainer.max_epochs={done + 1}"], cwd=tmp_path,
                           env=_env(), capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"took over the lock of process {first.pid}" in third.stdout + third.stderr
    assert _metrics(finished)["status"] == "ok" and _metrics(finished)["epochs"] == done + 1


def test_runs_of_the_same_second_are_ordered_by_when_they_started(tmp_path):
    runs = tmp_path / "runs"
    older, newer = runs / "2026-12-02_10-00-00_ffffff_a", runs / "2026-12-02_10-00-00_000000_b"  # uid order lies
    for i, run in enumerate((older, newer)):
        (run / ".hydra").mkdir(parents=True)
        (run / "config.yaml").write_text("seed: 0\n")
        (run / ".hydra" / "hydra.yaml").write_text("")
        os.utime(run / ".hydra" / "hydra.yaml", (1000.0 + i, 1000.0 + i))
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert directory.latest_run(tmp_path) == (newer, [])


def test_a_run_stopped_on_purpose_is_recorded_with_its_own_status(tmp_path):
    from omegaconf import OmegaConf

    from labkit.core.errors import RunStopped
    from labkit.run import records
    from labkit.run.plan import Plan

    class Pruned(RunStopped):
        status = "pruned"

    records.failed(Plan(OmegaConf.create({"seed": 0}), (), run_dir=tmp_path), Pruned("hopeless", epoch=3))
    entry = _metrics(tmp_path)
    assert entry["status"] == "pruned" and entry["stopped_at_epoch"] == 3 and "hopeless" in entry["error"]


@pytest.mark.slow
def test_retrieval_figures_reach_tensorboards_hparams_and_mlflow(cfg_factory, tmp_path, monkeypatch):
    """A triplet run's headline figures are computed after trainer.test: they still reach every logger."""
    from conftest import tensorboard_hparams
    from mlflow.tracking import MlflowClient

    from labkit.run.lifecycle import execute

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = cfg_factory("task=triplet", "model=embedding_net", "logger=[tensorboard,mlflow]", "trainer.max_epochs=1",
                      "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2")
    metrics = execute(cfg)
    p1 = metrics["retrieval/precision_at_1"]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'logs' / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("labkit").experiment_id])
    assert run.data.metrics["final/retrieval/precision_at_1"] == pytest.approx(p1)
    assert run.data.metrics["final/retrieval/pixels_map_at_r"] == pytest.approx(metrics["retrieval/pixels_map_at_r"])
    found = tensorboard_hparams(Path(cfg.paths.output_dir, "tensorboard"))
    assert b"hparams/retrieval/precision_at_1" in found["_hparams_/experiment"]


def test_every_figure_has_one_unit_on_the_charts():
    from labkit.tracking.summary import unit_of

    assert {unit_of(k) for k in ("test/acc", "test/error", "best_val/acc", "retrieval/precision_at_1",
                                 "retrieval/map_at_r", "test/top5")} == {"fraction (0-1)"}
    assert unit_of("test/loss") == "loss" and unit_of("wall_time_s") == "seconds"
