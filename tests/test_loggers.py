"""logger=mlflow for real (offline, local store), logger=wandb's clear error, logger=many and lists."""
import sys
import time
from pathlib import Path

import pytest

from labkit.core.errors import LabkitError
from labkit.run.lifecycle import execute

FAST = ["trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1"]


def test_mlflow_gets_params_metrics_and_final_figures(cfg_factory, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default store under paths.log_dir
    cfg = cfg_factory("logger=mlflow", *FAST)
    metrics = execute(cfg)
    db = tmp_path / "logs" / "mlruns" / "mlflow.db"
    assert db.exists()  # under paths.log_dir: what `mlflow ui --backend-store-uri sqlite:///...` opens
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("labkit")
    (run,) = client.search_runs([exp.experiment_id])
    run_dir = Path(cfg.paths.output_dir)
    assert run.info.run_name == run_dir.name and run.data.tags["run_dir"] == str(run_dir.resolve())
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert p["config/model/_target_"].endswith("LeNet") and p["config/seed"] == "0"
    assert p["config/task/optimizer/lr"] == str(cfg.task.optimizer.lr)
    m = run.data.metrics
    assert m["test/acc"] == pytest.approx(metrics["test/acc"])
    assert m["final/test/error"] == pytest.approx(metrics["test/error"])
    assert m["final/best_val/acc"] == pytest.approx(metrics["best_val/acc"])
    assert m["final/params"] == metrics["params"] and m["final/epochs"] == metrics["epochs"]
    history = client.get_metric_history(run.info.run_id, "val/loss")
    assert len(history) == 2  # one per epoch


def test_tracking_uri_is_overridable(cfg_factory, tmp_path):
    from mlflow.tracking import MlflowClient

    db = tmp_path / "elsewhere" / "track.db"
    cfg = cfg_factory("logger=mlflow", f"logger.mlflow.tracking_uri=sqlite:///{db}",
                      "logger.mlflow.experiment_name=mine",
                      "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                      "test=false")
    execute(cfg)
    exp = MlflowClient(tracking_uri=f"sqlite:///{db}").get_experiment_by_name("mine")
    assert exp is not None and not (tmp_path / "logs" / "mlruns" / "mlflow.db").exists()


def test_wandb_offline_for_real(cfg_factory, tmp_path, monkeypatch):
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = cfg_factory("logger=wandb", *FAST)
    execute(cfg)
    import wandb  # in the test extra

    wandb.finish()  # what the end of train.py's process (or labkit.cli.api.train) does
    run_dir = Path(cfg.paths.output_dir)
    (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")  # offline: written locally, nothing sent
    keys = (b"config/model/_target_", b"val/loss", b"test/acc", b"final/test/error", run_dir.name.encode())
    deadline = time.time() + 60
    while time.time() < deadline:  # wandb's service process writes the file after finish() returns
        data = log.read_bytes()
        if all(k in data for k in keys):
            break
        time.sleep(0.5)
    for key in keys:
        assert key in data, key


def test_wandb_without_the_package_says_what_to_install(cfg_factory, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as on a machine without wandb
    cfg = cfg_factory("logger=wandb", "trainer=debug")
    with pytest.raises(LabkitError, match="pip install wandb"):
        execute(cfg)


def test_wandb_is_offline_by_default_and_many_combines_every_logger(cfg_factory):
    cfg = cfg_factory("logger=many")
    assert set(cfg.logger) == {"tensorboard", "csv", "mlflow", "wandb"}
    assert cfg.logger.wandb.offline is True
    cfg = cfg_factory("logger=[tensorboard,mlflow]", sub="two")
    assert set(cfg.logger) == {"tensorboard", "mlflow"}
