"""Lightning DDP on CPU (gloo): 2 processes give the same weights as 1 process on the same global batch."""
import os
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
