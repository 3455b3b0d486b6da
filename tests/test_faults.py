"""Fault injection: kills, truncated files, unsafe pickles, NaN losses."""
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from labkit.callbacks import NonFiniteLossError
from labkit.core import files
from labkit.core.safe_load import UnsafeCheckpointError, load_checkpoint
from labkit.run import directory as runs
from labkit.run.lifecycle import execute

ARGS = ["trainer.max_epochs=6", "logger=none", "trainer.enable_progress_bar=false", "model=minialexnet_v4",
        "data.batch_size=256", "trainer.accelerator=cpu"]


def _env(log_dir):
    return dict(os.environ, LABKIT_LOG_DIR=str(log_dir), PYTHONPATH=str(ROOT))


def _weights(run_dir):
    sd = torch.load(Path(run_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    return sd


@pytest.mark.slow
def test_resume_after_three_sigkills_is_bit_identical(tmp_path):
    ref = subprocess.run([sys.executable, str(ROOT / "train.py"), *ARGS], cwd=tmp_path, env=_env(tmp_path / "ref"),
                         capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    ref_run = next((tmp_path / "ref" / "runs").iterdir())

    log_dir = tmp_path / "killed"
    rng = random.Random(0)
    args = ARGS
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=_env(log_dir),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ckpts = list(log_dir.glob("runs/*/checkpoints/last.ckpt"))
        seen = ckpts[0].stat().st_mtime_ns if ckpts else None
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:  # wait for a new checkpoint, then a random delay
            ckpts = list(log_dir.glob("runs/*/checkpoints/last.ckpt"))
            if ckpts and ckpts[0].stat().st_mtime_ns != seen:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        args = ["resume=true"]
    assert kills >= 2  # the run really was interrupted (a fast machine may finish before the third kill)
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), "resume=true"], cwd=tmp_path, env=_env(log_dir),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    run_dirs = list((log_dir / "runs").iterdir())
    assert len(run_dirs) == 1  # everything happened in the run's own directory
    a, b = _weights(ref_run), _weights(run_dirs[0])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ma, mb = files.read_json(ref_run / "metrics.json"), files.read_json(run_dirs[0] / "metrics.json")
    assert ma["test/acc"] == mb["test/acc"] and ma["test/loss"] == mb["test/loss"]
    assert mb["epochs"] == 6


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    files.write_json(target, {"a": 1})

    def boom(fd):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        files.write_json(target, {"a": 2, "b": "x" * 100000})
    assert files.read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left behind


@pytest.mark.slow
def test_truncated_checkpoint_gives_clear_error(tmp_path, cfg_factory):
    cfg = cfg_factory("trainer.max_epochs=1", "logger=none")
    m = execute(cfg)
    ckpt = Path(cfg.paths.output_dir) / m["best_checkpoint"]  # relative to the run
    ckpt.write_bytes(ckpt.read_bytes()[:5000])
    with pytest.raises(UnsafeCheckpointError, match="truncated or corrupt"):
        load_checkpoint(ckpt)
    from labkit.cli.evaluate import evaluate
    with pytest.raises(UnsafeCheckpointError, match=ckpt.name):
        evaluate(cfg_factory(f"run={ckpt}", name="evaluate", sub="e"))


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {_Payload.marker}",))


def test_checkpoint_needing_code_is_refused_and_runs_nothing(tmp_path):
    _Payload.marker = tmp_path / "pwned"
    bad = tmp_path / "evil.ckpt"
    with open(bad, "wb") as f:
        pickle.dump({"state_dict": {}, "x": _Payload()}, f)
    with pytest.raises(UnsafeCheckpointError, match="cannot be loaded safely"):
        load_checkpoint(bad)
    assert not _Payload.marker.exists()


def test_nan_loss_stops_cleanly_naming_the_step(cfg_factory):
    cfg = cfg_factory("model=lenet_v2", "task.optimizer.lr=1e12", "trainer.max_epochs=3", "logger=none",
                      "callbacks.finite_loss.check_every=1")
    with pytest.raises(NonFiniteLossError) as e:
        execute(cfg)
    msg = str(e.value)
    assert "global step" in msg and "batch" in msg and "lower learning rate" in msg
    for ckpt in Path(cfg.paths.output_dir, "checkpoints").glob("*.ckpt"):
        sd = load_checkpoint(ckpt)["state_dict"]
        assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())


@pytest.mark.slow
def test_resume_of_a_run_without_checkpoint_starts_it_in_place(tmp_path, cfg_factory):
    cfg = cfg_factory("trainer=debug", "logger=none")
    run = Path(cfg.paths.output_dir)
    run.mkdir(parents=True)
    runs.save_config(cfg, run)
    cfg2 = cfg_factory(f"resume={run}")
    m = execute(cfg2)
    assert m["status"] == "ok" and (run / "metrics.json").exists()


@pytest.mark.slow
def test_tensorboard_curves_continue_after_resume(tmp_path, cfg_factory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = cfg_factory("trainer.max_epochs=1", "trainer.log_every_n_steps=5")
    execute(cfg)
    run = Path(cfg.paths.output_dir)
    saved = (run / "config.yaml").read_text().replace("max_epochs: 1", "max_epochs: 2")
    (run / "config.yaml").write_text(saved)  # as if the first job had been killed after epoch 0
    execute(cfg_factory(f"resume={run}"))
    steps = []
    for ev in sorted((run / "tensorboard").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(ev))
        acc.Reload()
        steps += [e.step for e in acc.Scalars("val/acc")] if "val/acc" in acc.Tags()["scalars"] else []
    assert len(steps) == 2 and steps[1] > steps[0]  # epoch 1 continues after epoch 0, in the same folder
