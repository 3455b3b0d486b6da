"""Lightning DDP on CPU (gloo): 2 processes give the same weights as 1 process on the same global batch."""
import datetime
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

COMMON = ["model=lenet", "data.batch_size=128", "trainer.max_epochs=1", "trainer.limit_train_batches=4",
          "logger=none", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "test=false",
          "trainer.num_sanity_val_steps=0"]


def _train(tmp_path, name, extra):
    env = dict(os.environ, LABKIT_LOG_DIR=str(tmp_path / name), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), *COMMON, *extra], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = list((tmp_path / name / "runs").iterdir())
    assert len(runs) == 1  # the second rank wrote into the same run directory
    ckpt = runs[0] / "checkpoints" / "last.ckpt"
    return torch.load(ckpt, map_location="cpu", weights_only=True), r


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_single_process(tmp_path):
    single, _ = _train(tmp_path, "single", ["trainer.devices=1"])
    ddp, r = _train(tmp_path, "ddp", ["trainer=ddp", "trainer.devices=2", "trainer.strategy=ddp"])
    assert "distributed_backend=gloo" in r.stderr + r.stdout or "gloo" in r.stderr + r.stdout
    assert single["global_step"] == ddp["global_step"] == 4
    for k, v in single["state_dict"].items():
        assert torch.allclose(v, ddp["state_dict"][k], atol=1e-5, rtol=1e-4), k
    # and training moved the weights away from the seeded initial ones
    torch.manual_seed(0)
    from labkit.models import LeNet
    init = LeNet(1, 28, 10).state_dict()
    assert not torch.allclose(init["features.0.weight"], single["state_dict"]["model.features.0.weight"])


def test_each_rank_takes_its_share_of_the_global_batch_from_the_attached_trainer():
    """The data module reads world size and rank from the Trainer Lightning attaches to it (``trainer``):
    under 2 processes each rank gets half of every global batch, the two halves disjoint, together the batch
    one process would get. (While the module looked for ``_trainer`` every rank took the whole batch.)"""
    from types import SimpleNamespace

    from labkit.data import DigitsDataModule

    def batches(world, rank):
        dm = DigitsDataModule(data_dir=".", batch_size=64, seed=0)
        dm.trainer = SimpleNamespace(world_size=world, global_rank=rank, training=True,
                                     strategy=SimpleNamespace(root_device=torch.device("cpu")))
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(0)
        return [y for _, y in loader]

    whole, r0, r1 = batches(1, 0), batches(2, 0), batches(2, 1)
    assert len(whole) == len(r0) == len(r1)
    assert len(whole[0]) == 64 and len(r0[0]) == len(r1[0]) == 32
    assert torch.equal(torch.cat([r0[0], r1[0]]), whole[0])  # labels of the same images, split in two


def _ddp_sweep(tmp_path, launcher):
    """Two DDP jobs (2 CPU processes each) of one sweep; returns the sweep folder and its job folders."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for key in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE"):
        env.pop(key, None)
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", *launcher, "trainer=ddp", "trainer.devices=2",
                        "model=mlp", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
                        "+trainer.limit_val_batches=1", "logger=none", "test=false", "callbacks=none",
                        "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "task.optimizer.lr=0.01,0.02",
                        f"paths.log_dir={tmp_path / 'logs'}"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "multirun").iterdir()  # a rank 1 that re-ran the sweep would make a second one
    assert not (tmp_path / "logs" / "runs").exists()  # nor a run folder of its own
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in jobs] == ["0", "1"]
    ports = []
    for job, lr in zip(jobs, ("0.01", "0.02")):
        assert json.loads((job / "metrics.json").read_text())["status"] == "ok"
        assert (job / "train_ddp_process_1.log").is_file()  # rank 1 ran this job, in this job's folder
        assert f"lr: {lr}" in (job / "config.yaml").read_text()
        log = (job / "train.log").read_text()
        assert "Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2" in log
        ports.append(re.search(r"DDP ranks meet at 127\.0\.0\.1:(\d+)", log).group(1))
    assert len(set(ports)) == 2 and sorted(os.listdir(sweep / ".labkit-ports")) == sorted(ports)
    return sweep, jobs


def _span(job):
    """When the job's rank 0 logged its first and last lines."""
    stamps = re.findall(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]", (job / "train.log").read_text(), re.M)
    return [datetime.datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in (stamps[0], stamps[-1])]


@pytest.mark.slow
def test_two_ddp_jobs_of_a_sweep_run_side_by_side_each_on_its_own_port_and_folder(tmp_path):
    """joblib's 2 workers: each job's rank 1 runs that job (not the whole sweep again) in that job's folder, and the
    two rendezvous, at the same time, on two ports. Before, each rank 1 started a sweep of its own from the worker's
    command line (python -m loky...) and rank 0 waited for it in the rendezvous."""
    _, (a, b) = _ddp_sweep(tmp_path, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
    (a0, a1), (b0, b1) = _span(a), _span(b)
    assert a0 < b1 and b0 < a1  # side by side


@pytest.mark.slow
def test_ddp_jobs_one_after_another_in_one_process(tmp_path):
    """The basic launcher runs job 1 in the process job 0 ran in: job 0's LOCAL_RANK/WORLD_SIZE/MASTER_PORT and
    process group are gone by then (before, job 1 took itself for a launched rank and trained in job 0's dead
    process group)."""
    _ddp_sweep(tmp_path, [])


def test_a_sweep_job_gets_its_own_port_and_puts_everything_back(tmp_path):
    """Pure bookkeeping, in-process: the job's command line and folder for Lightning to copy, a port no other job of
    the sweep holds, and afterwards the environment, sys.argv and hydra.run.dir as they were."""
    from omegaconf import OmegaConf

    from labkit.run import rendezvous

    hydra = OmegaConf.create({"run": {"dir": "${oc.env:HOME}/runs"}})
    OmegaConf.set_readonly(hydra, True)
    ddp = OmegaConf.create({"strategy": "ddp", "devices": 2, "num_nodes": 1})
    env = {"PATH": "/bin", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}  # what the last job's Lightning left behind
    argv = list(sys.argv)
    env_before = {"PATH": "/bin"}
    with rendezvous.sweep_job(hydra, ["model=mlp", "task.optimizer.lr=0.01"], tmp_path / "0", tmp_path, ddp,
                              env=env_before) as port:
        assert env_before["MASTER_PORT"] == str(port) and "LOCAL_RANK" not in env_before
        assert sys.argv[1:] == ["model=mlp", "task.optimizer.lr=0.01"] and hydra.run.dir == str(tmp_path / "0")
        assert rendezvous.command_line() == argv  # what provenance records: the process's own
        with rendezvous.sweep_job(hydra, [], tmp_path / "1", tmp_path, ddp, env={"PATH": "/bin"}) as other:
            assert other != port  # two jobs side by side
    assert env_before == {"PATH": "/bin"} and sys.argv == argv
    assert OmegaConf.to_container(hydra)["run"]["dir"] == "${oc.env:HOME}/runs"  # the interpolation, not its value
    assert rendezvous.launched_outside(env)  # leftovers would read as a launcher: sweep_job runs from a clean state
    assert rendezvous.launched_outside({"TORCHELASTIC_RUN_ID": "x", "RANK": "0"})
    assert not rendezvous.launched_outside({"PATH": "/bin"})
    with rendezvous.sweep_job(hydra, [], tmp_path / "2", tmp_path, ddp, env={"MASTER_PORT": "29500",
                                                                            "WORLD_SIZE": "2"}) as kept:
        assert kept is None  # a launcher's rendezvous is the launcher's
    cpu = OmegaConf.create({"strategy": "auto", "devices": 1, "num_nodes": 1})
    with rendezvous.sweep_job(hydra, ["model=mlp"], tmp_path / "3", tmp_path, cpu, env={}) as none:
        assert none is None and sys.argv == argv  # one process: no port claimed, the command line left alone
    assert sorted(os.listdir(tmp_path / rendezvous.PORT_DIR)) == sorted([str(port), str(other)])
