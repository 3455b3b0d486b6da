"""Preemption: a scheduler's SIGTERM (or SIGUSR1 before a time limit) stops a run at the next step with its last
end-of-epoch checkpoint intact and the status ``preempted``; the requeued job (the same command in the same
directory, as SLURM and submitit requeue it) continues and ends exactly like an uninterrupted run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from labkit.core import files

ARGS = ["trainer.max_epochs=4", "logger=none", "trainer.enable_progress_bar=false", "model=minialexnet_v4",
        "data.batch_size=64", "trainer.accelerator=cpu"]


def _env(tmp: Path) -> dict:
    return dict(os.environ, LABKIT_LOG_DIR=str(tmp / "logs"), PYTHONPATH=str(ROOT))


def _train(tmp: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *ARGS, f"hydra.run.dir={run_dir}", *extra],
                            cwd=tmp, env=_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop_mid_epoch(tmp: Path, run_dir: Path, sig: int) -> tuple[int, str]:
    """Start a run, wait for its first checkpoint, then send ``sig`` a moment later (in the next epoch)."""
    proc = _train(tmp, run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not last.exists():
        time.sleep(0.02)
    time.sleep(0.3)
    assert proc.poll() is None, "the run finished before it could be stopped"
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


def _weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_sigterm_mid_epoch_then_the_requeued_job_finishes_like_an_uninterrupted_run(tmp_path):
    ref = _train(tmp_path, tmp_path / "reference")
    assert ref.wait(timeout=600) == 0, ref.stdout.read()[-3000:]

    job = tmp_path / "job"  # a requeued job runs again in its own directory
    code, out = _stop_mid_epoch(tmp_path, job, signal.SIGTERM)
    assert code == 1 and "Traceback" not in out, out[-3000:]
    assert "error: the run was stopped by a scheduler's SIGTERM/SIGUSR1 during epoch" in out
    record = files.read_json(job / "metrics.json")
    assert record["status"] == "preempted" and 1 <= record["stopped_at_epoch"] < 4
    saved = torch.load(job / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["epoch"] == record["stopped_at_epoch"]  # written at the step where it stopped, inside that epoch

    again = _train(tmp_path, job)  # the same command, as the scheduler requeues it
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-3000:]
    assert "holds this job's unfinished run (preempted): continuing it" in out
    a, b = _weights(tmp_path / "reference"), _weights(job)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = files.read_json(tmp_path / "reference" / "metrics.json"), files.read_json(job / "metrics.json")
    assert mb["status"] == "ok" and mb["epochs"] == 4
    assert ma["test/acc"] == mb["test/acc"] and ma["test/loss"] == mb["test/loss"]
    assert mb["wall_time_s"] > mb["session_wall_time_s"]  # the first session counts too


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 on this platform")
def test_sigusr1_before_a_time_limit_preempts_like_sigterm(tmp_path):
    code, out = _stop_mid_epoch(tmp_path, tmp_path / "job", signal.SIGUSR1)
    assert code == 1, out[-3000:]
    assert files.read_json(tmp_path / "job" / "metrics.json")["status"] == "preempted"


@pytest.mark.slow
def test_a_directory_holding_another_unfinished_experiment_is_refused(tmp_path, capsys):
    from labkit.cli.train import cli

    run = tmp_path / "job"
    base = [f"paths.log_dir={tmp_path / 'logs'}", "trainer.max_epochs=1", "logger=none", "trainer.limit_train_batches=3",
            "trainer.limit_val_batches=2", "test=false", "trainer.enable_progress_bar=false", f"hydra.run.dir={run}"]
    cli(base)
    files.write_json(run / "metrics.json", {"status": "preempted", "stopped_at_epoch": 1})
    before = (run / "config.yaml").read_text()
    with pytest.raises(SystemExit) as e:
        cli([*base, "task.optimizer.lr=0.5"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "holds an unfinished run whose task.optimizer.lr is 0.01, not 0.5" in err
    assert (run / "config.yaml").read_text() == before
    assert files.read_json(run / "metrics.json")["status"] == "preempted"
