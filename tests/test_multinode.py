"""Two "nodes" on one machine (CPU, gloo), one process each, started the way each launcher starts them: Lightning's
plain recipe (MASTER_ADDR, MASTER_PORT, NODE_RANK, WORLD_SIZE), torchrun, and SLURM's variables. Each launch
finishes in one run directory with status ok and the weights of one process on the same global batch."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

pytestmark = pytest.mark.slow

COMMON = ["model=lenet", "data.batch_size=64", "trainer.max_epochs=2", "trainer.limit_train_batches=3",
          "trainer.limit_val_batches=2", "logger=none", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
          "test=false", "trainer.num_sanity_val_steps=0"]
DDP = ["trainer=ddp", "trainer.devices=1", "trainer.num_nodes=2"]
LAUNCH_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
               "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and not k.startswith("SLURM_")}
    env.update({"LABKIT_LOG_DIR": str(tmp_path / "logs"), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                "LABKIT_RANK_WAIT_S": "120", **extra})
    return env


def _nodes(tmp_path, run_dir, launch, extra=()) -> list[str]:
    """Start node 0 and node 1 (``launch(rank, port) -> (argv prefix, env)``) and wait for both; their outputs."""
    port = _free_port()
    procs = []
    for rank in (0, 1):
        prefix, env = launch(rank, port)
        cmd = [*prefix, str(ROOT / "train.py"), *COMMON, *DDP, *extra, f"hydra.run.dir={run_dir}"]
        procs.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=400)
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"node {rank}:\n{out[-4000:]}"
    return outs


def _check_one_run(tmp_path, run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["epochs"] == 2, metrics
    assert not (tmp_path / "logs" / "runs").exists()  # no node made a folder of its own
    assert json.loads((run_dir / ".labkit.lock").read_text() or "{}") == {}  # released cleanly by rank 0
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 6  # 2 epochs of 3 global batches
    return ckpt["state_dict"]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process, the same global batch (2 nodes x 32 = 64): the weights DDP must match."""
    tmp = tmp_path_factory.mktemp("single")
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), *COMMON, "trainer.devices=1",
                        f"hydra.run.dir={tmp / 'run'}"], cwd=tmp, env=_env(tmp), capture_output=True, text=True,
                       timeout=400)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return torch.load(tmp / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def _same_weights(single, ddp):
    for k, v in single.items():
        assert torch.allclose(v, ddp[k], atol=1e-5, rtol=1e-4), k


def test_plain_node_rank_world_size_recipe(tmp_path, single):
    """Lightning's own multi-node recipe, also Kubernetes PyTorchJob's: node 1 used to take itself for rank 0, claim
    the run and be refused, leaving node 0 in the rendezvous."""
    run_dir = tmp_path / "shared" / "run"

    def launch(rank, port):
        return [sys.executable], _env(tmp_path, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NODE_RANK=str(rank),
                                      WORLD_SIZE="2")

    _nodes(tmp_path, run_dir, launch)
    _same_weights(single, _check_one_run(tmp_path, run_dir))


def test_torchrun_two_nodes(tmp_path, single):
    run_dir = tmp_path / "shared" / "run"

    def launch(rank, port):
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={rank}",
                "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}"], _env(tmp_path)

    _nodes(tmp_path, run_dir, launch)
    _same_weights(single, _check_one_run(tmp_path, run_dir))


def test_slurm_variables_two_nodes(tmp_path, single):
    run_dir = tmp_path / "shared" / "run"

    def launch(rank, port):
        return [sys.executable], _env(tmp_path, SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="1", SLURM_NNODES="2",
                                      SLURM_PROCID=str(rank), SLURM_LOCALID="0", SLURM_NODEID=str(rank),
                                      SLURM_JOB_NAME="train", SLURM_JOB_ID="4242", SLURM_NODELIST="127.0.0.1",
                                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))

    _nodes(tmp_path, run_dir, launch)
    _same_weights(single, _check_one_run(tmp_path, run_dir))


@pytest.mark.parametrize("shared", [False, True], ids=["own-folder", "given-folder"])
def test_nodes_without_a_shared_folder_say_so_instead_of_hanging(tmp_path, shared):
    """Without hydra.run.dir each node names its own folder: node 1 waits a bounded time for rank 0's claim of its
    folder, then says what to give (one paragraph), instead of waiting in the rendezvous. A folder given with
    hydra.run.dir may be rank 0's too (later): kept."""
    port = _free_port()
    env = _env(tmp_path, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NODE_RANK="1", WORLD_SIZE="2",
               LABKIT_RANK_WAIT_S="3")
    given = [f"hydra.run.dir={tmp_path / 'logs' / 'runs' / 'shared'}"] if shared else []
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), *COMMON, *DDP, *given], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    out = r.stdout + r.stderr
    assert "global rank 1 of 2" in out and "hydra.run.dir" in out and "Traceback" not in out, out[-3000:]
    left = list((tmp_path / "logs" / "runs").glob("*"))
    if shared:
        assert [p.name for p in left] == ["shared"] and not (left[0] / "metrics.json").exists()  # no record either
    else:  # the folder Hydra made for this node (a name of its own) held nothing else: removed
        assert not left, list((tmp_path / "logs" / "runs").glob("*/*"))
