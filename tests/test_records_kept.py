"""No record lost or contradicted (issue 32): reused folders, evaluation during training, edited configs, refused
starts, one tracking run per run. Runs go through train.py's own ``cli(argv)`` in-process."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import torch

from labkit.cli.train import cli
from labkit.core import files
from labkit.run import directory

FAST = ("trainer.accelerator=cpu", "trainer.devices=1", "trainer.enable_progress_bar=false",
        "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2")


def _train(tmp: Path, *args: str) -> int:
    try:
        cli([f"paths.log_dir={tmp / 'logs'}", f"paths.data_dir={tmp / 'data'}", *FAST, *args])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


def _runs(tmp: Path) -> list[Path]:
    runs = tmp / "logs" / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


def _listing(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*")}


@pytest.fixture
def finished(tmp_path) -> Path:
    assert _train(tmp_path, "trainer.max_epochs=1", "logger=none") == 0
    (run,) = _runs(tmp_path)
    return run


# ----- 4. resume=true: the newest by the start the run recorded --------------------------------------------------------
def test_resume_true_takes_the_newest_run_by_its_recorded_start_not_its_folder_name(tmp_path):
    runs = tmp_path / "runs"
    for name, started in (("preempt2", "2026-01-01 10:00:00"), ("2026-03-01_09-00-00_abcdef_lenet", "2026-03-01 "
                                                                                                       "09:00:00")):
        run = runs / name
        (run / "checkpoints").mkdir(parents=True)
        (run / "config.yaml").write_text("seed: 0\n")
        (run / "checkpoints" / "last.ckpt").write_bytes(b"")
        (run / "provenance.json").write_text(json.dumps({"sessions": [{"started": started}]}))
    newest, skipped = directory.latest_run(tmp_path)
    assert newest.name == "2026-03-01_09-00-00_abcdef_lenet" and skipped == []
    # the custom name is taken when it did start last
    (runs / "preempt2" / "provenance.json").write_text(json.dumps({"sessions": [{"started": "2026-05-01 00:00:00"}]}))
    assert directory.latest_run(tmp_path)[0].name == "preempt2"


# ----- 1. a finished run's folder is never trained over ---------------------------------------------------------------
@pytest.mark.slow
def test_a_finished_runs_folder_is_refused_to_another_experiment_and_to_the_same_command(finished, tmp_path, capsys):
    before = _listing(finished)
    capsys.readouterr()
    assert _train(tmp_path, "trainer.max_epochs=1", "logger=none", f"hydra.run.dir={finished}",
                  "model=lenet_v2") == 1
    err = capsys.readouterr().err
    assert f"resume={finished}" in err and f"reproduce={finished}" in err and "model" in err
    assert "nothing was written" in err and "Traceback" not in err
    assert _listing(finished) == before
    # the very command that made it: refused too, not retrained over
    assert _train(tmp_path, "trainer.max_epochs=1", "logger=none", f"hydra.run.dir={finished}") == 1
    err = capsys.readouterr().err
    assert "this same experiment's record" in err and f"resume={finished}" in err
    assert _listing(finished) == before
    assert _runs(tmp_path) == [finished]


@pytest.mark.slow
def test_the_notebook_api_refuses_a_finished_runs_folder_too(finished, cfg_factory):
    from omegaconf import open_dict

    from labkit.core.errors import ConfigError
    from labkit.run.lifecycle import execute

    cfg = cfg_factory("trainer.max_epochs=1", "logger=none", "model=lenet_v2")
    with open_dict(cfg):
        cfg.paths.output_dir = str(finished)
    before = _listing(finished)
    with pytest.raises(ConfigError, match="holds a run whose metrics.json says status ok"):
        execute(cfg)
    assert _listing(finished) == before


# ----- 5. refused starts leave no run folder --------------------------------------------------------------------------
def test_a_gpu_asked_for_on_a_cpu_machine_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert _train(tmp_path, "trainer=gpu", "trainer.max_epochs=1", "logger=none", "trainer.accelerator=gpu") == 1
    assert "torch sees no CUDA GPU" in capsys.readouterr().err
    assert _runs(tmp_path) == []


def test_a_missing_dataset_leaves_no_run_folder(tmp_path, capsys):
    assert _train(tmp_path, "data=mnist", "trainer.max_epochs=1", "logger=none") == 1
    assert "mnist files not found" in capsys.readouterr().err
    assert _runs(tmp_path) == []


def test_a_missing_dataset_found_in_the_job_removes_the_folder_hydra_made(tmp_path, monkeypatch, capsys):
    """The safety net: a refusal after Hydra made the folder (here the pre-flight's data check is skipped) leaves
    nothing either."""
    from labkit.run import startup

    monkeypatch.setattr(startup, "check_data_files", lambda cfg: None)
    assert _train(tmp_path, "data=mnist", "trainer.max_epochs=1", "logger=none") == 1
    assert "mnist files not found" in capsys.readouterr().err
    assert _runs(tmp_path) == []


def _no_mlflow(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))


@pytest.mark.slow
def test_a_missing_logger_package_leaves_no_run_folder_and_no_resume_failure(finished, tmp_path, monkeypatch, capsys):
    _no_mlflow(monkeypatch)
    assert _train(tmp_path, "logger=mlflow", "trainer.max_epochs=1") == 1
    assert "needs the 'mlflow' package" in capsys.readouterr().err
    assert _runs(tmp_path) == [finished]
    before = _listing(finished)
    assert _train(tmp_path, f"resume={finished}", "logger=mlflow", "trainer.max_epochs=2") == 1
    assert "needs the 'mlflow' package" in capsys.readouterr().err
    assert not (finished / "resume_failed.json").exists() and _listing(finished) == before


def test_an_unreachable_tracking_server_leaves_no_run_folder(tmp_path, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    assert _train(tmp_path, "logger=mlflow", f"logger.mlflow.tracking_uri=http://127.0.0.1:{port}",
                  "logger.mlflow.connect_timeout_s=2", "trainer.max_epochs=1") == 1
    assert "cannot reach the MLflow tracking server" in capsys.readouterr().err
    assert _runs(tmp_path) == []
    assert not (tmp_path / "logs").exists()  # refused by the pre-flight: no folder was ever made, not one removed


def test_the_preflight_asks_the_tracking_server_itself_quickly_and_names_its_uri(tmp_path, monkeypatch):
    import socket
    import time

    from conftest import make_cfg

    from labkit.core.servers import TrackingServerError
    from labkit.run import startup

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    cfg = make_cfg(["logger=mlflow", f"logger.mlflow.tracking_uri={uri}"], tmp_path)
    started = time.monotonic()
    with pytest.raises(TrackingServerError) as e:
        startup.check_before_claim(cfg)
    assert time.monotonic() - started < 5
    text = str(e.value)
    assert f"MLflow tracking server at {uri}: connection refused" in text and "\n" not in text
    assert "logger.mlflow.connect_timeout_s=5 s" in text
    # a local store and a check switched off are not asked
    startup.check_tracking_servers(make_cfg(["logger=mlflow"], tmp_path))
    startup.check_tracking_servers(make_cfg(["logger=mlflow", f"logger.mlflow.tracking_uri={uri}",
                                             "logger.mlflow.connect_timeout_s=null"], tmp_path))


def test_the_preflight_asks_an_online_wandb_server_and_leaves_offline_runs_alone(tmp_path, monkeypatch):
    import socket
    import time

    from conftest import make_cfg

    from labkit.core.servers import TrackingServerError
    from labkit.run import startup

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", url)  # as `wandb login --host` or a cluster's environment sets it
    cfg = make_cfg(["logger=wandb", "logger.wandb.offline=false", "logger.wandb.connect_timeout_s=2"], tmp_path)
    started = time.monotonic()
    with pytest.raises(TrackingServerError) as e:
        startup.check_before_claim(cfg)
    assert time.monotonic() - started < 5
    assert f"W&B server at {url}: connection refused" in str(e.value) and "logger.wandb.offline=true" in str(e.value)
    startup.check_tracking_servers(make_cfg(["logger=wandb"], tmp_path))  # offline (the default): nothing asked
    monkeypatch.setenv("WANDB_MODE", "offline")
    startup.check_tracking_servers(cfg)


# ----- 2. evaluate.py on a run in training ----------------------------------------------------------------------------
@pytest.mark.slow
def test_evaluation_reads_a_consistent_checkpoint_while_the_best_is_replaced(finished, monkeypatch):
    """A thread plays the training run: as soon as evaluate.py has found the best checkpoint, it writes a new best and
    deletes the old one (as ModelCheckpoint does). The evaluation takes the new best instead of failing."""
    from labkit.cli import evaluate as ev

    best = directory.find_checkpoint(finished, "best")
    metrics = files.read_json(finished / "metrics.json")
    original = directory.find_checkpoint
    replaced = []

    def replace_best():
        new = best.with_name("epoch007.ckpt")
        files.atomic_write_bytes(new, best.read_bytes())
        files.write_json(finished / "metrics.json", {**metrics, "best_checkpoint": f"checkpoints/{new.name}"})
        best.unlink()
        replaced.append(new)

    def finding(run_dir, which="best"):
        found = original(run_dir, which)
        if not replaced:
            worker = threading.Thread(target=replace_best)
            worker.start()
            worker.join()
        return found

    monkeypatch.setattr(ev.runs, "find_checkpoint", finding)
    saved, task, data, ckpt = ev.load_run(finished)
    assert replaced and ckpt == replaced[0] and ckpt.name == "epoch007.ckpt"
    assert not list((finished / "checkpoints").glob(".*labkit-tmp"))  # the snapshot link is gone


@pytest.mark.slow
def test_a_snapshot_holds_the_file_while_training_deletes_it(finished):
    from labkit.cli.evaluate import load_task, snapshot

    best = directory.find_checkpoint(finished, "best")
    target = directory.load_config(finished).task._target_
    with snapshot(finished, None, "best") as (path, held):
        assert path == best
        best.unlink()  # the run wrote a new best and removed this one while it was read
        assert load_task(held, target) is not None
    assert not held.exists()


def test_two_evaluations_of_one_split_at_once_keep_each_others_staging(tmp_path):
    final = tmp_path / "evaluation" / "test"
    inside_first, second_done = threading.Event(), threading.Event()
    errors = []

    def first():
        try:
            with files.staged_dir(final) as out:
                (out / "report.json").write_text('{"who": "first"}')
                inside_first.set()
                second_done.wait(30)
                assert (out / "report.json").is_file()  # the second evaluation did not remove it
        except BaseException as e:  # noqa: BLE001 (reported by the main thread)
            errors.append(e)

    worker = threading.Thread(target=first)
    worker.start()
    assert inside_first.wait(30)
    with files.staged_dir(final) as out:
        (out / "report.json").write_text('{"who": "second"}')
    second_done.set()
    worker.join(30)
    assert not errors, errors
    assert json.loads((final / "report.json").read_text()) == {"who": "first"}  # the last swap wins, whole
    assert [p.name for p in final.parent.iterdir() if p.name.endswith((".staging", ".replaced"))] == []


# ----- 3. an edited config.yaml -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_an_edited_config_is_named_by_reproduce_resume_and_evaluate(finished, tmp_path, capsys):
    from labkit.cli.evaluate import load_run
    from labkit.core.errors import ConfigError
    from labkit.run.directory import config_digest
    from labkit.run.startup import DIGEST_KEY

    config = finished / "config.yaml"
    assert files.read_json(finished / "metrics.json")[DIGEST_KEY] == config_digest(finished)
    text = config.read_text()
    assert "lr: 0.01" in text
    config.write_text(text.replace("lr: 0.01", "lr: 0.05"))
    before = _listing(finished)
    capsys.readouterr()
    for command in (f"reproduce={finished}", f"resume={finished}"):
        assert _train(tmp_path, command, "trainer.max_epochs=2") == 1
        err = capsys.readouterr().err
        assert f"{config} was edited after the run trained with it" in err and "task.optimizer.lr" in err
    with pytest.raises(ConfigError, match="task.optimizer.lr"):
        load_run(finished)
    assert _listing(finished) == before and _runs(tmp_path) == [finished]
    # an edit of how the run is driven (its loggers) is no edit of what it trained
    config.write_text(text.replace("logger: {}", "logger:\n  csv:\n    _target_: labkit.loggers.CSVLogger\n"
                                                 "    save_dir: ${paths.output_dir}\n"))
    assert config.read_text() != text
    load_run(finished)


# ----- 6. a resumed run continues its MLflow and W&B runs ---------------------------------------------------------------
@pytest.mark.slow
def test_a_resumed_run_continues_its_mlflow_and_wandb_runs(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert _train(tmp_path, "logger=[mlflow,wandb]", "trainer.max_epochs=1") == 0
    (run,) = _runs(tmp_path)
    assert _train(tmp_path, f"resume={run}", "trainer.max_epochs=2") == 0
    assert files.read_json(run / "metrics.json")["epochs"] == 2
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    (only,) = client.search_runs([client.get_experiment_by_name("labkit").experiment_id])
    assert [m.step for m in client.get_metric_history(only.info.run_id, "val/loss")] != []
    sessions = json.loads((run / "provenance.json").read_text())["sessions"]
    assert {s["loggers"]["MLFlowLogger"] for s in sessions} == {only.info.run_id}
    ids = {p.name.rsplit("-", 1)[-1] for p in (run / "wandb").glob("*run-*-*")}
    assert len(ids) == 1, ids


@pytest.mark.slow
def test_resume_with_an_old_run_keeps_its_sessions_count(finished, tmp_path):
    assert _train(tmp_path, f"resume={finished}", "trainer.max_epochs=2", "logger=none") == 0
    metrics = files.read_json(finished / "metrics.json")
    assert metrics["epochs"] == 2 and metrics["status"] == "ok"
    assert os.path.getsize(finished / ".config.trained.yaml") > 0


# ----- 7. messages that promise only what is there ----------------------------------------------------------------------
def test_a_run_stopped_before_its_first_checkpoint_does_not_promise_one(tmp_path):
    from labkit.core.errors import RunStopped
    from labkit.run.lifecycle import stopped_by

    (tmp_path / "checkpoints").mkdir()
    stopped = stopped_by(KeyboardInterrupt(), 0, tmp_path)
    assert isinstance(stopped, RunStopped) and "checkpoints stay" not in str(stopped)
    assert "saved no checkpoint yet" in str(stopped)
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert "its checkpoints stay" in str(stopped_by(KeyboardInterrupt(), 3, tmp_path))


def test_the_nan_guard_names_a_kept_checkpoint_only_when_there_is_one(tmp_path):
    from types import SimpleNamespace

    from labkit.callbacks import FiniteLossGuard

    cb = SimpleNamespace(last_model_path="", best_model_path="")
    module = SimpleNamespace(trainer=SimpleNamespace(checkpoint_callback=cb))
    assert "no checkpoint was written" in FiniteLossGuard._kept(module)
    (tmp_path / "last.ckpt").write_bytes(b"x")
    cb.last_model_path = str(tmp_path / "last.ckpt")
    assert "last good checkpoint is kept" in FiniteLossGuard._kept(module)


@pytest.mark.slow
def test_a_second_identical_command_is_refused_without_saying_it_continues(tmp_path, caplog):
    """A requeued job's folder being trained by another process: refused before the 'continuing it' line."""
    import logging

    from labkit.run import plan as planning
    from labkit.run.directory import RunLockedError, claim

    assert _train(tmp_path, "trainer.max_epochs=1", "logger=none") == 0
    (run,) = _runs(tmp_path)
    metrics = files.read_json(run / "metrics.json")
    files.write_json(run / "metrics.json", {**metrics, "status": "preempted"})  # unfinished: a requeue continues it
    from omegaconf import OmegaConf

    cfg = directory.load_config(run)
    cfg.resume = None
    made = planning.Plan(OmegaConf.create(OmegaConf.to_container(cfg)), (), run_dir=run)
    with claim(run), caplog.at_level(logging.INFO, logger="labkit"):
        with pytest.raises(RunLockedError):
            planning.continuation(made)
    assert "continuing it from its last checkpoint" not in caplog.text
