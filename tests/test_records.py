"""Runs as trustworthy records: continue with new settings, move or copy a run, refuse without writing."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from omegaconf import OmegaConf

from labkit.core import files
from labkit.core.errors import ConfigError
from labkit.core.safe_load import UnsafeCheckpointError
from labkit.run import directory as runs
from labkit.run import records
from labkit.run.lifecycle import execute
from labkit.run.plan import Plan, Resume

FAST = ("logger=none", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2")


def _listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def _resume(cfg_factory, run: Path, *overrides: str, sub: str):
    """execute(cfg) as ``python train.py resume=<run> <overrides>`` calls it."""
    return execute(cfg_factory(f"resume={run}", *overrides, sub=sub), overrides=[f"resume={run}", *overrides])


@pytest.fixture
def one_epoch_run(cfg_factory):
    cfg = cfg_factory("trainer.max_epochs=1", "callbacks.model_checkpoint.save_top_k=-1", "logger=csv", sub="first")
    metrics = execute(cfg, overrides=["trainer.max_epochs=1"])
    return Path(cfg.paths.output_dir), metrics


@pytest.mark.slow
def test_resume_applies_new_trainer_limits_and_records_them(one_epoch_run, cfg_factory, caplog):
    run, first = one_epoch_run
    with caplog.at_level("INFO", logger="labkit"):
        second = _resume(cfg_factory, run, "trainer.max_epochs=2", sub="again")
    ckpts = {p.name for p in (run / "checkpoints").glob("*.ckpt")}
    assert {"epoch000.ckpt", "epoch001.ckpt", "last.ckpt"} <= ckpts and "epoch002.ckpt" not in ckpts
    assert second["epochs"] == 2 and second["global_step"] == 2 * first["global_step"]
    assert second["val/loss"] < first["val/loss"]  # it really trained one more epoch
    assert "resuming with trainer.max_epochs: 1 -> 2" in caplog.text
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.trainer.max_epochs == 2
    history = saved.resume_history
    assert len(history) == 1 and history[0].changes["trainer.max_epochs"] == {"from": 1, "to": 2}
    assert history[0]["from"] == "checkpoints/last.ckpt"
    assert saved.overrides == ["trainer.max_epochs=1"]  # the run's own command line is kept
    # the CSV curve continues in the same file: epoch 0 then epoch 1
    with open(run / "csv" / "metrics.csv") as f:
        epochs = [row["epoch"] for row in csv.DictReader(f) if row.get("val/loss")]
    assert epochs == ["0", "1"]


@pytest.mark.parametrize("override, key", [("model=lenet_v2", "model"), ("task.optimizer.lr=0.5", "task.optimizer.lr"),
                                           ("seed=3", "seed"), ("data.batch_size=16", "data.batch_size"),
                                           ("trainer.accumulate_grad_batches=2", "trainer.accumulate_grad_batches")])
@pytest.mark.slow
def test_resume_refuses_to_change_the_experiment_and_writes_nothing(one_epoch_run, cfg_factory, override, key):
    run, _ = one_epoch_run
    before = _listing(run)
    with pytest.raises(ConfigError, match=f"cannot change '{key}'") as e:
        _resume(cfg_factory, run, "trainer.max_epochs=2", override, sub="refused")
    assert "init_from=" in str(e.value)
    assert _listing(run) == before


@pytest.mark.slow
def test_a_failed_resume_keeps_the_finished_runs_results(one_epoch_run, cfg_factory):
    run, first = one_epoch_run
    metrics_before = (run / "metrics.json").read_text()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    cfg = cfg_factory(f"resume={run}", "trainer.max_epochs=2", sub="broken")
    with pytest.raises(UnsafeCheckpointError, match="last.ckpt"):
        execute(cfg, overrides=[f"resume={run}", "trainer.max_epochs=2"])
    assert not (run / "resume_failed.json").exists()  # refused before anything was written
    assert (run / "metrics.json").read_text() == metrics_before
    # the same resume failing while training (what lifecycle.train does with any error once it holds the run)
    plan = Plan(OmegaConf.load(run / "config.yaml"), (f"resume={run}",),
                Resume(run, run / "checkpoints" / "last.ckpt", 1, {}), run_dir=run)
    records.failed(plan, RuntimeError("a bug while training"))
    assert (run / "metrics.json").read_text() == metrics_before
    attempts = files.read_json(run / "resume_failed.json")["attempts"]
    assert len(attempts) == 1 and attempts[0]["status"] == "failed"


@pytest.mark.slow
def test_a_moved_run_evaluates_and_resumes_itself(one_epoch_run, cfg_factory, tmp_path):
    from labkit.cli.evaluate import evaluate

    run, first = one_epoch_run
    assert str(run) not in (run / "config.yaml").read_text()  # nothing absolute points into the run
    assert not os.path.isabs(files.read_json(run / "metrics.json")["best_checkpoint"])
    moved = tmp_path / "elsewhere" / "my-run"
    moved.parent.mkdir()
    shutil.move(str(run), moved)
    report = evaluate(cfg_factory(f"run={moved}", name="evaluate", sub="ev"))
    assert report["classification"]["accuracy"] == pytest.approx(first["test/acc"], abs=1e-6)
    assert report["checkpoint"] == first["best_checkpoint"] and not run.exists()
    _resume(cfg_factory, moved, "trainer.max_epochs=2", sub="res")
    assert not run.exists()  # nothing was written at the old place
    assert (moved / "checkpoints" / "epoch001.ckpt").exists()
    state = torch.load(moved / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    assert all(str(moved.resolve()) in json.dumps(v, default=str) for k, v in state.items() if "Checkpoint" in k)


@pytest.mark.slow
def test_a_copied_run_without_checkpoints_never_uses_the_original(one_epoch_run, cfg_factory, tmp_path):
    from labkit.cli.evaluate import evaluate

    run, _ = one_epoch_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("checkpoints"))
    with pytest.raises(runs.RunNotFoundError, match="lacks its best checkpoint"):
        evaluate(cfg_factory(f"run={copy}", name="evaluate", sub="ev"))
    assert not (copy / "evaluation").exists()


@pytest.mark.slow
def test_a_killed_run_moved_elsewhere_resumes_in_its_new_place(cfg_factory, tmp_path):
    cfg = cfg_factory("trainer.max_epochs=2", *FAST, sub="killed")
    execute(cfg, overrides=[])
    run = Path(cfg.paths.output_dir)
    (run / "metrics.json").unlink()  # as if killed after the last epoch's checkpoint
    for p in (run / "checkpoints").glob("epoch*.ckpt"):
        p.unlink()
    moved = tmp_path / "moved-killed"
    shutil.move(str(run), moved)
    metrics = _resume(cfg_factory, moved, "trainer.max_epochs=3", sub="res")
    assert metrics["epochs"] == 3 and (moved / "metrics.json").exists() and not run.exists()
    assert (moved / metrics["best_checkpoint"]).is_file()


@pytest.mark.slow
def test_run_names_and_refusals_before_any_file(tmp_path):
    """Through the real entry point: names say what ran; a refused resume writes nothing anywhere."""
    env = dict(os.environ, LABKIT_LOG_DIR=str(tmp_path / "logs"), PYTHONPATH=str(ROOT))
    args = ["trainer.fast_dev_run=true", "logger=none", "trainer.enable_progress_bar=false"]
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), "task=triplet", "model=embedding_net", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = (tmp_path / "logs" / "runs").iterdir()
    assert run.name.endswith("_triplet-embedding_net-digits")
    not_a_run = tmp_path / "notes"
    not_a_run.mkdir()
    (not_a_run / "mine.txt").write_text("keep")
    for bad in (f"resume={not_a_run}", f"resume={run}"):
        before_run, before_other = _listing(run), _listing(not_a_run)
        res = subprocess.run([sys.executable, str(ROOT / "train.py"), bad, "model=lenet_v2"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode != 0
        assert _listing(run) == before_run and _listing(not_a_run) == before_other
    assert {p.name for p in (tmp_path / "logs" / "runs").iterdir()} == {run.name}


@pytest.mark.slow
def test_hparams_reach_tensorboard(cfg_factory):
    from conftest import tensorboard_hparams

    cfg = cfg_factory("trainer.max_epochs=1", "task.optimizer.lr=0.05", sub="hp")
    execute(cfg, overrides=["task.optimizer.lr=0.05"])
    found = tensorboard_hparams(Path(cfg.paths.output_dir, "tensorboard"))
    assert "_hparams_/session_start_info" in found
    blob = found["_hparams_/session_start_info"]
    assert b"task.optimizer.lr" in blob and b"hparams/test/acc" in found["_hparams_/experiment"]


@pytest.mark.slow
def test_a_presets_expected_figure_is_printed_beside_the_runs(cfg_factory, caplog):
    cfg = cfg_factory("trainer.fast_dev_run=true", "logger=none", "expected={test/acc: 0.9789, test/top9: 0.5}",
                      sub="exp")
    with caplog.at_level("INFO", logger="labkit"):
        metrics = execute(cfg, overrides=[])
    assert f"test/acc: notes: 0.9789, this run: {metrics['test/acc']:.4f}" in caplog.text
    assert "test/top9: notes: 0.5, this run: not measured" in caplog.text


@pytest.mark.slow
def test_labkits_own_measurement_is_printed_apart_from_the_notes_figure(cfg_factory, caplog):
    cfg = cfg_factory("trainer.fast_dev_run=true", "logger=none", "expected={test/acc: 0.81}",
                      "measured={test/acc: 0.8123, where: 'cifar10-full test_batch, 30 epochs'}", sub="meas")
    with caplog.at_level("INFO", logger="labkit"):
        metrics = execute(cfg, overrides=[])
    assert (f"test/acc: notes: 0.81, labkit measured: 0.8123 (cifar10-full test_batch, 30 epochs), "
            f"this run: {metrics['test/acc']:.4f}") in caplog.text


@pytest.mark.slow
def test_resuming_a_finished_run_without_a_larger_limit_says_so(one_epoch_run, cfg_factory, caplog):
    run, _ = one_epoch_run
    before = _listing(run)
    finished = files.read_json(run / "metrics.json")
    for extra in ((), ("trainer.max_epochs=1",)):
        with caplog.at_level("WARNING", logger="labkit"):
            assert _resume(cfg_factory, run, *extra, sub="again") == finished
    assert "finished 1 epochs and trainer.max_epochs=1, so there is nothing left to train" in caplog.text
    assert "trainer.max_epochs=6" in caplog.text
    assert _listing(run) == before


def test_init_from_a_file_that_is_not_a_checkpoint_is_refused_before_anything_is_written(cfg_factory, tmp_path):
    from labkit.core.safe_load import UnsafeFileError

    readme = tmp_path / "README.md"
    readme.write_text("# not weights\n")
    cfg = cfg_factory(f"init_from={readme}", sub="bad")
    with pytest.raises(UnsafeFileError, match="is not a checkpoint"):
        execute(cfg, overrides=[])
    assert not Path(cfg.paths.output_dir).exists()


@pytest.mark.slow
def test_a_run_started_from_another_resumes_after_its_source_is_gone(one_epoch_run, cfg_factory, tmp_path):
    source, _ = one_epoch_run
    moved = tmp_path / "source-elsewhere"
    shutil.copytree(source, moved)
    cfg = cfg_factory("trainer.max_epochs=1", "logger=none", f"init_from={moved}", sub="child")
    execute(cfg, overrides=[f"init_from={moved}"])
    shutil.rmtree(moved)  # the source run was deleted: its weights live on in the child's checkpoints
    child = Path(cfg.paths.output_dir)
    metrics = _resume(cfg_factory, child, "trainer.max_epochs=2", sub="child-again")
    assert metrics["epochs"] == 2 and metrics["init_from"] == str(moved)


@pytest.mark.slow
def test_a_resume_killed_after_a_new_best_keeps_the_recorded_best_checkpoint(cfg_factory, monkeypatch):
    """metrics.json names the finished run's best checkpoint: a resume that writes a better one and is killed before
    it has rewritten metrics.json must not have deleted it; a resume that finishes removes it."""
    import pytorch_lightning as pl

    from labkit.cli.evaluate import evaluate

    every_epoch_best = ("callbacks.model_checkpoint.monitor=epoch", "callbacks.model_checkpoint.mode=max")
    cfg = cfg_factory("trainer.max_epochs=1", *FAST, *every_epoch_best, sub="first")
    first = execute(cfg, overrides=[])
    run = Path(cfg.paths.output_dir)
    assert first["best_checkpoint"] == "checkpoints/epoch000.ckpt"
    recorded = (run / "metrics.json").read_text()

    def killed(*a, **k):
        raise KeyboardInterrupt("killed while testing")

    monkeypatch.setattr(pl.Trainer, "test", killed)
    with pytest.raises(KeyboardInterrupt):
        _resume(cfg_factory, run, "trainer.max_epochs=2", sub="killed")
    assert (run / "checkpoints" / "epoch001.ckpt").is_file()  # the better checkpoint was written...
    assert (run / "checkpoints" / "epoch000.ckpt").is_file()  # ...and the recorded one kept
    assert (run / "metrics.json").read_text() == recorded
    monkeypatch.undo()
    report = evaluate(cfg_factory(f"run={run}", name="evaluate", sub="ev"))
    assert report["classification"]["accuracy"] == pytest.approx(first["test/acc"], abs=1e-6)

    third = _resume(cfg_factory, run, "trainer.max_epochs=3", sub="finished")
    assert third["best_checkpoint"] == "checkpoints/epoch002.ckpt"
    assert {p.name for p in (run / "checkpoints").glob("epoch*.ckpt")} == {"epoch002.ckpt"}
