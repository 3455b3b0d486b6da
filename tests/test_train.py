import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, sampled, write_cifar, write_mnist
from hydra.utils import instantiate

from labkit.cli.evaluate import evaluate
from labkit.run.lifecycle import execute
from labkit.tasks import ClassificationTask

MODELS = ["mlp", "lenet", "lenet_v2", "lenet_color", "minialexnet", "minialexnet_v2", "minialexnet_v3",
          "minialexnet_v4"]
DATA = ["digits", "mnist", "fashion_mnist", "cifar10", "cifar100"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_mnist(root, n_train=60, n_test=20)
    write_mnist(root, folder="FashionMNIST", n_train=60, n_test=20)
    write_cifar(root, 10, n_train=50, n_test=20)
    write_cifar(root, 100, n_train=100, n_test=20)
    return root


GEOMETRIES = [(m, d) for m in MODELS for d in DATA]


@pytest.mark.parametrize("model,data", sampled(GEOMETRIES, [i for i, (m, d) in enumerate(GEOMETRIES)  # each model and
                                                            if MODELS.index(m) % len(DATA) == DATA.index(d)],  # data once
                                        unpack=True),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_every_model_fits_every_data_geometry(model, data, cfg_factory):
    """The model x data matrix as forward-shape checks (milliseconds each): the model's YAML, composed with the data's
    geometry and instantiated by Hydra, maps a zero batch of that geometry to one logit per class, in training mode
    (batch norm, dropout) and in evaluation mode, and its loss reaches every parameter. Real trainings of a covering
    subset: test_models_train_on_the_datasets below."""
    cfg = cfg_factory(f"model={model}", f"data={data}")
    net = instantiate(cfg.model)
    assert isinstance(net, torch.nn.Module) and type(net).__name__.lower() == model.replace("_", "")
    x = torch.zeros(2, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    logits = net.train()(x)
    assert logits.shape == (2, cfg.data.num_classes)
    torch.nn.functional.cross_entropy(logits, torch.zeros(2, dtype=torch.long)).backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    with torch.no_grad():
        assert net.eval()(x).shape == (2, cfg.data.num_classes)


# every model and every dataset trained once (one batch of train, val and test): 8 of the 40 pairs
TRAINED = [(model, DATA[i % len(DATA)]) for i, model in enumerate(MODELS)]


@pytest.mark.slow
@pytest.mark.parametrize("model,data", TRAINED)
def test_models_train_on_the_datasets(model, data, cfg_factory, data_root):
    cfg = cfg_factory(f"model={model}", f"data={data}", "trainer=debug", "logger=none", "callbacks=none",
                      f"paths.data_dir={data_root}", "data.batch_size=8", "data.val_size=10")
    metrics = execute(cfg)
    assert metrics["status"] == "ok" and "test/acc" in metrics and metrics["params"] > 0


def test_one_model_trains_on_one_dataset(cfg_factory, data_root):
    """The fast tier's one real (one-batch) training through execute: LeNet on the MNIST files."""
    cfg = cfg_factory("model=lenet", "data=mnist", "trainer=debug", "logger=none", "callbacks=none",
                      f"paths.data_dir={data_root}", "data.batch_size=8", "data.val_size=10")
    metrics = execute(cfg)
    assert metrics["status"] == "ok" and "test/acc" in metrics and metrics["params"] == 44426


@pytest.mark.slow
def test_digits_learns_above_90_percent_and_run_dir_is_complete(cfg_factory):
    cfg = cfg_factory("trainer.max_epochs=12")
    metrics = execute(cfg)
    assert metrics["test/acc"] > 0.90, metrics
    run = Path(cfg.paths.output_dir)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test/acc"] == pytest.approx(metrics["test/acc"])
    assert saved["params"] == 44426 and saved["seed"] == 0
    assert (run / "config.yaml").exists() and (run / "checkpoints" / "last.ckpt").exists()
    assert (run / saved["best_checkpoint"]).exists()  # stored relative to the run
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    # self-contained checkpoint: no extra arguments needed
    task = ClassificationTask.load_from_checkpoint(run / saved["best_checkpoint"], weights_only=True)
    assert task(torch.zeros(2, 1, 28, 28)).shape == (2, 10)

    # evaluate.py reproduces the test accuracy from the run's own config and checkpoint
    ecfg = cfg_factory(f"run={run}", name="evaluate", sub="eval")
    report = evaluate(ecfg)["classification"]
    assert report["accuracy"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    out = run / "evaluation" / "test"
    assert (out / "confusion_matrix.png").stat().st_size > 1000 and (out / "report.json").exists()
    assert set(report["per_class_accuracy"]) == {str(i) for i in range(10)}
    assert 0.0 <= report["top5_accuracy"] <= 1.0 and report["top5_accuracy"] >= report["accuracy"]


@pytest.mark.slow
def test_same_seed_same_result(cfg_factory):
    a = execute(cfg_factory("trainer.max_epochs=1", "logger=none", sub="a"))
    b = execute(cfg_factory("trainer.max_epochs=1", "logger=none", sub="b"))
    assert a["test/acc"] == b["test/acc"] and a["test/loss"] == b["test/loss"]


@pytest.mark.slow
def test_null_seed_draws_and_records_one(cfg_factory):
    cfg = cfg_factory("seed=null", "trainer=debug", "logger=none")
    m = execute(cfg)
    assert isinstance(m["seed"], int)


def _run(args, cwd, env_extra=None):
    env = dict(os.environ, LABKIT_LOG_DIR=str(cwd / "logs"), PYTHONPATH=str(ROOT))
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_multirun_writes_summary_with_one_row_per_job(tmp_path):
    r = _run(["-m", "model=lenet,mlp", "trainer=debug", "logger=none"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    sweeps = list((tmp_path / "logs" / "multirun").iterdir())
    assert len(sweeps) == 1
    summary = (sweeps[0] / "summary.csv").read_text().strip().splitlines()
    assert len(summary) == 3  # header + 2 jobs
    assert "model=lenet" in summary[1] and "model=mlp" in summary[2]
    assert ",ok," in summary[1] and "44426" in summary[1]
    assert (sweeps[0] / "summary.md").exists() and "| job |" in r.stdout


@pytest.mark.slow
def test_sweep_with_a_failing_job_finishes_the_others_and_exits_nonzero(tmp_path):
    r = _run(["-m", "model=lenet,minialexnet", "data.image_size=6", "trainer=debug", "logger=none"], tmp_path)
    assert r.returncode != 0
    sweep = next((tmp_path / "logs" / "multirun").iterdir())
    rows = (sweep / "summary.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and all(",failed," in row for row in rows[1:])
    (tmp_path / "x").mkdir()
    r = _run(["-m", "data.image_size=28,6", "trainer=debug", "logger=none"], tmp_path / "x")
    assert r.returncode != 0
    sweep = next((tmp_path / "x" / "logs" / "multirun").iterdir())
    rows = (sweep / "summary.csv").read_text().strip().splitlines()
    assert ",ok," in rows[1] and ",failed," in rows[2]
    assert "IncompatibleError" in rows[2] and "1x6x6" in rows[2]  # the error's message is in the summary
    assert "1 of 2 sweep jobs failed" in r.stderr


@pytest.mark.slow
def test_two_runs_in_the_same_second_get_distinct_dirs(tmp_path):
    procs = [subprocess.Popen([sys.executable, str(ROOT / "train.py"), "trainer=debug", "logger=none"], cwd=tmp_path,
                              env=dict(os.environ, LABKIT_LOG_DIR=str(tmp_path / "logs"), PYTHONPATH=str(ROOT)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    assert len(list((tmp_path / "logs" / "runs").iterdir())) == 2


PRESETS = ["lenet_mnist", "lenet_v2_mnist", "lenet_color_cifar100", "minialexnet_cifar100", "minialexnet_v2_cifar100",
           "minialexnet_v3_cifar100", "minialexnet_v4_cifar100", "minialexnet_v4_cifar10"]


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_notes_presets_compose_and_run(preset, cfg_factory, data_root):
    cfg = cfg_factory(f"experiment={preset}", "trainer.fast_dev_run=true", "logger=none", "callbacks=none",
                      f"paths.data_dir={data_root}", "data.val_size=10")
    assert cfg.data.batch_size == 1024 and cfg.task.optimizer.lr == 0.01 and cfg.task.optimizer.momentum == 0.99
    assert cfg.trainer.max_epochs in (50, 150)
    if "cifar" in preset:
        assert cfg.data.augment == (preset.startswith(("minialexnet_v3", "minialexnet_v4")))
        assert cfg.data.image_size == (28 if cfg.data.augment else 32)
    assert execute(cfg)["status"] == "ok"


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path):
    r = _run(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=lenet,mlp", "trainer=debug",
              "logger=none"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = next((tmp_path / "logs" / "multirun").iterdir())
    rows = (sweep / "summary.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and all(",ok," in row for row in rows[1:])


@pytest.mark.slow
def test_optuna_search_returns_the_metric_and_records_the_best(tmp_path):
    r = _run(["hparams_search=optuna", "hydra.sweeper.n_trials=2", "trainer.max_epochs=1", "logger=none",
              "trainer.enable_progress_bar=false"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = next((tmp_path / "logs" / "multirun").iterdir())
    best = (sweep / "optimization_results.yaml").read_text()
    assert "best_params" in best and "task.optimizer.lr" in best and "best_value" in best


def test_slurm_launcher_config_composes(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "hydra/launcher=submitit_slurm",
                        "hydra.launcher.gpus_per_node=4", "hydra.launcher.nodes=2", "trainer=ddp", "trainer.devices=4",
                        "trainer.num_nodes=2", "--cfg", "hydra", "-p", "hydra.launcher"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "SlurmLauncher" in r.stdout and "gpus_per_node: 4" in r.stdout and "nodes: 2" in r.stdout
