"""Ranks from every launcher's variables (labkit.run.ranks), and who claims a run directory under DDP."""
import threading
import time

import pytest

from labkit.core.errors import ConfigError
from labkit.run import directory
from labkit.run.ranks import Ranks, current, devices_count, ranks


def test_nothing_set_is_one_process_of_rank_zero():
    r = ranks({})
    assert r == Ranks(0, 0, 0, 1, "lightning") and r.is_zero


@pytest.mark.parametrize("node, local, per_node, expected", [(0, 0, 2, 0), (0, 1, 2, 1), (1, 0, 2, 2), (1, 1, 2, 3),
                                                              (1, 0, 1, 1)])
def test_plain_lightning_recipe_node_rank_world_size_local_rank(node, local, per_node, expected):
    env = {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500", "NODE_RANK": str(node), "WORLD_SIZE": str(2 * per_node)}
    if local:
        env["LOCAL_RANK"] = str(local)  # Lightning's launcher sets it in the processes it starts
    r = ranks(env, devices_per_node=per_node)
    assert (r.global_rank, r.local_rank, r.node_rank, r.world_size, r.launcher) == \
        (expected, local, node, 2 * per_node, "lightning")
    assert r.is_zero == (expected == 0)


def test_plain_recipe_without_devices_derives_them_from_world_size_and_nodes():
    env = {"NODE_RANK": "1", "WORLD_SIZE": "8"}
    assert ranks(env, num_nodes=2).global_rank == 4
    assert ranks({**env, "LOCAL_WORLD_SIZE": "4", "LOCAL_RANK": "3"}).global_rank == 7
    assert ranks({"GROUP_RANK": "1", "WORLD_SIZE": "2"}).node_rank == 1  # Lightning falls back on GROUP_RANK too
    # node 1 with no LOCAL_RANK was taken for rank 0 before: it claimed the run and was refused (issue 31)
    assert not ranks({"NODE_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}).is_zero


def test_torchrun_variables():
    env = {"TORCHELASTIC_RUN_ID": "none", "RANK": "3", "LOCAL_RANK": "1", "GROUP_RANK": "1", "WORLD_SIZE": "4",
           "LOCAL_WORLD_SIZE": "2", "NODE_RANK": "7"}  # torchrun's own variables win over a stray NODE_RANK
    assert ranks(env) == Ranks(3, 1, 1, 4, "torchelastic")
    assert ranks({**env, "RANK": "0", "LOCAL_RANK": "0", "GROUP_RANK": "0"}).is_zero


def test_torchrun_inside_slurm_is_torchrun():
    env = {"TORCHELASTIC_RUN_ID": "x", "RANK": "1", "LOCAL_RANK": "1", "GROUP_RANK": "0", "WORLD_SIZE": "2",
           "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
    assert ranks(env).launcher == "torchelastic" and ranks(env).global_rank == 1


def test_slurm_variables():
    env = {"SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
           "SLURM_JOB_NAME": "train", "LOCAL_RANK": "0"}
    assert ranks(env) == Ranks(3, 1, 1, 4, "slurm")


def test_interactive_slurm_job_is_not_srun():
    """Lightning ignores SLURM in an interactive allocation (job name bash/interactive): so does labkit."""
    env = {"SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
           "SLURM_JOB_NAME": "interactive", "NODE_RANK": "1", "WORLD_SIZE": "2"}
    r = ranks(env)
    assert r.launcher == "lightning" and r.node_rank == 1 and not r.is_zero


def test_lsf_variables_with_the_rank_file(tmp_path):
    rankfile = tmp_path / "ranks"
    rankfile.write_text("launch\nhostA\nhostA\nhostB\nhostB\n")
    env = {"LSB_JOBID": "12", "LSB_DJOB_RANKFILE": str(rankfile), "JSM_NAMESPACE_LOCAL_RANK": "1",
           "JSM_NAMESPACE_SIZE": "4", "JSM_NAMESPACE_RANK": "3"}
    assert ranks(env, hostname="hostB") == Ranks(3, 1, 1, 4, "lsf")
    assert ranks({**env, "JSM_NAMESPACE_RANK": "0", "JSM_NAMESPACE_LOCAL_RANK": "0"}, hostname="hostA").is_zero


@pytest.mark.parametrize("env, expected", [
    ({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "0",
      "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, Ranks(2, 0, 1, 4, "mpi")),
    ({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
      "OMPI_COMM_WORLD_NODE_RANK": "1"}, Ranks(3, 1, 1, 4, "mpi")),
    ({"PMI_SIZE": "2", "PMI_RANK": "1", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "1"}, Ranks(1, 0, 1, 2, "mpi")),
    ({"PMI_SIZE": "1", "PMI_RANK": "0"}, Ranks(0, 0, 0, 1, "lightning")),  # one MPI process: not distributed
])
def test_mpi_variables(env, expected):
    assert ranks(env) == expected


def test_kubeflow_pytorchjob_one_process_per_pod():
    env = {"MASTER_ADDR": "job-master-0", "MASTER_PORT": "23456", "WORLD_SIZE": "3", "RANK": "2"}
    assert ranks(env) == Ranks(2, 0, 2, 3, "kubeflow")
    assert ranks({**env, "RANK": "0"}).is_zero


def test_bad_values_are_skipped_not_fatal():
    assert ranks({"NODE_RANK": "", "LOCAL_RANK": "x", "WORLD_SIZE": "2"}).is_zero


@pytest.mark.parametrize("devices, n", [(2, 2), ("2", 2), ([0, 1, 3], 3), ("0,1", 2), ("auto", None), (-1, None),
                                        ("-1", None), (None, None), ("1", 1)])
def test_devices_count(devices, n):
    assert devices_count(devices) == n


def test_current_reads_the_trainer_config():
    from omegaconf import OmegaConf

    trainer = OmegaConf.create({"devices": 2, "num_nodes": 2})
    assert current(trainer, {"NODE_RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}).global_rank == 3


# ----- who claims ---------------------------------------------------------------------------------------------------
def test_only_rank_zero_claims_and_another_rank_waits_for_it(tmp_path):
    run = tmp_path / "run"
    other = Ranks(1, 0, 1, 2, "lightning")
    seen = {}

    def rank_one():
        with directory.claim(run, other) as d:
            seen["dir"] = d

    t = threading.Thread(target=rank_one)
    t.start()
    time.sleep(1.0)
    assert t.is_alive() and "dir" not in seen  # rank 1 waits: rank 0 has not claimed yet
    with directory.claim(run, Ranks(0, 0, 0, 2, "lightning")):
        t.join(timeout=10)
        # rank 1 went on into rank 0's directory, which rank 0 holds (read here: rank 1 may look before rank 0 has
        # written its name into the lock file it already holds)
        assert seen["dir"] == run and directory._holder(run / directory.LOCK_FILE)["pid"] > 0
    assert not t.is_alive()


def test_a_rank_that_never_sees_rank_zero_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv(directory.RANK_WAIT_ENV, "0.5")
    run = tmp_path / "node1-own-folder"
    run.mkdir()
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as e:
        with directory.claim(run, Ranks(2, 0, 1, 4, "torchelastic")):
            pass
    assert time.monotonic() - t0 < 5
    text = str(e.value)
    assert "global rank 2 of 4" in text and "hydra.run.dir" in text and str(run) in text
    assert "\n" not in text and not (run / directory.LOCK_FILE).exists()  # one paragraph; nothing written


def test_node_one_of_the_plain_recipe_is_not_refused_by_node_zeros_lock(tmp_path, monkeypatch):
    """Issue 31: node 1 (NODE_RANK=1, no LOCAL_RANK) took itself for rank 0 and was refused by node 0's lock."""
    run = tmp_path / "run"
    for key in ("RANK", "LOCAL_RANK", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID", "GROUP_RANK"):
        monkeypatch.delenv(key, raising=False)
    with directory.claim(run, Ranks(0, 0, 0, 2, "lightning")):
        monkeypatch.setenv("NODE_RANK", "1")
        monkeypatch.setenv("WORLD_SIZE", "2")
        directory.check_unclaimed(run)  # the pre-flight: not refused
        with directory.claim(run) as d:  # the ranks from the environment
            assert d == run
        monkeypatch.setenv("NODE_RANK", "0")
        with pytest.raises(directory.RunLockedError):
            directory.check_unclaimed(run)  # a second rank 0 still is
