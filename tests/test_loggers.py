"""logger=mlflow for real (offline, local store), logger=wandb's clear error, logger=many and lists."""
import sys
import time
from pathlib import Path

import pytest

from labkit.core.errors import LabkitError
from labkit.run.lifecycle import execute

FAST = ["trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1"]


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


def _newest_hparams_experiment(folder: Path) -> bytes:
    """The HParams tab's metric list as TensorBoard shows it: the last event file's (files are named by time)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = b""
    for ev in sorted(folder.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(ev))
        acc.Reload()
        try:
            found = acc.PluginTagToContent("hparams").get("_hparams_/experiment", found)
        except KeyError:  # an event file without hyper-parameters
            pass
    return found


def _scalars(folder: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = []
    for ev in sorted(folder.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(ev))
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            values += [e.value for e in acc.Scalars(tag)]
    return values


@pytest.mark.slow
def test_evaluate_sends_its_headline_figures_to_the_runs_loggers(cfg_factory, tmp_path, monkeypatch, caplog):
    """An autoencoder's few-shot figures (codes vs pixels), computed by evaluate.py after training, reach the same
    TensorBoard folder (scalars and the HParams tab, beside the run's test figures), CSV file and MLflow run; a
    tracking server that is down costs a warning, not the evaluation."""
    import json
    import logging
    import socket

    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf

    from labkit.cli.evaluate import evaluate

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = cfg_factory("task=autoencoder", "model=conv_autoencoder", "logger=[tensorboard,csv,mlflow]", *FAST)
    metrics = execute(cfg)
    run = Path(cfg.paths.output_dir)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'logs' / 'mlruns' / 'mlflow.db'}")
    (trained,) = client.search_runs([client.get_experiment_by_name("labkit").experiment_id])
    sessions = json.loads((run / "provenance.json").read_text())["sessions"]
    assert sessions[-1]["loggers"]["MLFlowLogger"] == trained.info.run_id  # the run's records name its MLflow run

    ecfg = cfg_factory(f"run={run}", "++reports=[representation]", "shots=20", "draws=1", "tsne_samples=0",
                       name="evaluate", sub="eval")
    rep = evaluate(ecfg)["representation"]
    codes, pixels = rep["fewshot_accuracy_codes_mean"], rep["fewshot_accuracy_pixels_mean"]
    # MLflow: the same run (no new one), still finished, with the 100-shot figures of codes and of raw pixels
    (same,) = client.search_runs([client.get_experiment_by_name("labkit").experiment_id])
    assert same.info.run_id == trained.info.run_id and same.info.status == "FINISHED"
    m = same.data.metrics
    assert m["final/representation/fewshot_accuracy_codes_mean"] == pytest.approx(codes)
    assert m["final/representation/fewshot_accuracy_pixels_mean"] == pytest.approx(pixels)
    assert m["final/representation/knn_accuracy_codes"] == pytest.approx(rep["knn_accuracy_codes"])
    assert m["final/test/loss"] == pytest.approx(metrics["test/loss"])
    # TensorBoard: scalars, and the HParams tab lists the new figures beside the run's own final figures
    tb = run / "tensorboard"
    assert _scalars(tb, "final/representation/fewshot_accuracy_codes_mean") == [pytest.approx(codes)]
    assert _scalars(tb, "hparams/representation/fewshot_accuracy_pixels_mean") == [pytest.approx(pixels)]
    experiment = _newest_hparams_experiment(tb)
    assert b"hparams/representation/fewshot_accuracy_codes_mean" in experiment and b"hparams/test/loss" in experiment
    # CSV: the same file, one more row
    header = (run / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "final/representation/fewshot_accuracy_codes_mean" in header and "val/loss" in header

    # a run trained before labkit recorded the id: its MLflow run is the one tagged with the run directory
    record = json.loads((run / "provenance.json").read_text())
    del record["sessions"][-1]["loggers"]
    (run / "provenance.json").write_text(json.dumps(record))
    evaluate(ecfg)
    (same,) = client.search_runs([client.get_experiment_by_name("labkit").experiment_id])
    history = client.get_metric_history(same.info.run_id, "final/representation/fewshot_accuracy_codes_mean")
    assert same.info.run_id == trained.info.run_id and len(history) == 2

    # the MLflow server is gone: a warning; the reports and the other loggers are not affected
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    saved = OmegaConf.load(run / "config.yaml")
    saved.logger.mlflow.tracking_uri = f"http://127.0.0.1:{port}"
    saved.logger.mlflow.connect_timeout_s = 2
    OmegaConf.save(saved, run / "config.yaml")
    (run / "evaluation").rename(run / "evaluation_before")
    with caplog.at_level(logging.WARNING, logger="labkit"):
        evaluate(ecfg)
    assert (run / "evaluation" / "test" / "report.json").is_file()
    assert "logger.mlflow: could not open the run's mlflow logger again" in caplog.text
    assert "connection refused" in caplog.text
    assert len(_scalars(tb, "final/representation/fewshot_accuracy_codes_mean")) == 3


@pytest.mark.slow
def test_every_figure_and_the_best_model_reach_tensorboard_mlflow_and_wandb(cfg_factory, tmp_path, monkeypatch):
    """Issue 34: after a tiny training and evaluate.py, the run's own MLflow run (a file store) holds the learning
    curves and the confusion matrix as artifacts (a folder per report and split) and the best model, which loads back
    and predicts; TensorBoard has them as images; W&B (offline) as images and the checkpoint as a model artifact."""
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from labkit.cli.evaluate import evaluate

    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = (tmp_path / "mlruns").as_uri()
    cfg = cfg_factory("logger=[tensorboard,mlflow,wandb]", f"logger.mlflow.tracking_uri={store}",
                      f"logger.mlflow.artifact_location={tmp_path / 'mlartifacts'}", *FAST)
    execute(cfg)
    run_dir = Path(cfg.paths.output_dir)
    evaluate(cfg_factory(f"run={run_dir}", name="evaluate", sub="ev"))

    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("labkit").experiment_id])
    listed = {a.path for a in client.list_artifacts(run.info.run_id, "training")}
    assert "training/learning_curves.png" in listed
    evaluation = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation/test")}
    assert "evaluation/test/confusion_matrix.png" in evaluation
    local = client.download_artifacts(run.info.run_id, "evaluation/test/confusion_matrix.png", str(tmp_path / "dl"))
    assert Path(local).read_bytes() == (run_dir / "evaluation" / "test" / "confusion_matrix.png").read_bytes()
    # the best model: an MLflow model of this run, with a signature and an example, that loads and predicts
    (model,) = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert model.source_run_id == run.info.run_id and model.name == "model"
    net = mlflow.pytorch.load_model(f"models:/{model.model_id}")
    from mlflow.models import get_model_info

    info = get_model_info(f"models:/{model.model_id}")
    assert info.signature is not None and tuple(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 1, 28, 28)
    x = torch.zeros(3, 1, 28, 28)
    assert net(x).shape == (3, 10)
    assert info.saved_input_example_info is not None
    assert client.get_run(run.info.run_id).info.status == "FINISHED"

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()["images"]
    assert "training/learning_curves" in tags and "evaluation/test/confusion_matrix" in tags
    img = events.Images("evaluation/test/confusion_matrix")[-1]
    assert img.width > 100 and img.height > 100

    wandb_files = list((run_dir / "wandb").rglob("*.png"))
    assert any("confusion_matrix" in p.name for p in wandb_files) and any("learning_curves" in p.name
                                                                          for p in wandb_files)
    assert np.asarray([p.stat().st_size for p in wandb_files]).min() > 1000
    assert any((run_dir / "wandb").rglob("*.wandb"))


@pytest.mark.slow
def test_predicts_figure_reaches_the_runs_tensorboard_and_mlflow_run(cfg_factory, tmp_path, monkeypatch):
    """Issue 34: predict.py's predictions.png goes to the loggers the run was trained with, like evaluate's figures:
    an image in its TensorBoard folder and an artifact of its own MLflow run (a file store), under
    predictions/<time>/; loggers=false keeps it in the run folder only."""
    import numpy as np
    from mlflow.tracking import MlflowClient
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from labkit.cli.predict import predict

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = (tmp_path / "mlruns").as_uri()
    cfg = cfg_factory("logger=[tensorboard,mlflow]", f"logger.mlflow.tracking_uri={store}", "logger.mlflow.log_model=false",
                      f"logger.mlflow.artifact_location={tmp_path / 'mlartifacts'}", "test=false", *FAST)
    execute(cfg)
    run_dir = Path(cfg.paths.output_dir)
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(tmp_path / "digit.png")
    out = predict(cfg_factory(f"run={run_dir}", f"inputs={tmp_path / 'digit.png'}", name="predict", sub="p"))["out_dir"]
    key = f"predictions/{out.name}"

    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("labkit").experiment_id])
    assert {a.path for a in client.list_artifacts(run.info.run_id, key)} == {f"{key}/predictions.png"}
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert f"{key}/predictions" in events.Tags()["images"]

    quiet = predict(cfg_factory(f"run={run_dir}", f"inputs={tmp_path / 'digit.png'}", "loggers=false",
                                name="predict", sub="q"))["out_dir"]
    assert not client.list_artifacts(run.info.run_id, f"predictions/{quiet.name}")
