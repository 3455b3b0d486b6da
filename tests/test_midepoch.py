"""Checkpoints inside long epochs: last.ckpt every N steps (atomically, besides every epoch end), at the step where a
SIGTERM stops the run, and a resume that continues from that step with the batches the uninterrupted run would have
seen (labkit's seeded samplers skip the ones already trained on): the same weights, exactly, on the CPU."""
import os
import signal

import pytest
import torch
from omegaconf import open_dict

from labkit.callbacks import mid_epoch_position
from labkit.data.sampling import EpochBatchSampler
from labkit.run.lifecycle import execute

BASE = ["trainer.max_epochs=2", "trainer.limit_train_batches=6", "trainer.limit_val_batches=2", "logger=none",
        "test=false", "data.batch_size=32", "trainer.num_sanity_val_steps=0", "data.augment=true"]


def test_the_sampler_starts_one_pass_part_way_then_whole_epochs():
    s = EpochBatchSampler(100, 10, shuffle=True, seed=3)
    s.set_epoch(1)
    whole = list(s)
    s.resume_at(1, 4)
    assert list(s) == whole[4:]  # the same order, the first 4 batches skipped
    assert list(s) == whole  # once only
    s.resume_at(0, 4)
    assert list(s) == whole  # a position in another epoch is not this pass's


def test_position_of_a_checkpoint():
    def ckpt(started, processed, batches):
        return {"loops": {"fit_loop": {"epoch_progress": {"total": {"started": started, "processed": processed}},
                                       "epoch_loop.batch_progress": {"current": {"processed": batches}}}}}

    assert mid_epoch_position(ckpt(2, 1, 3)) == (1, 3)  # inside epoch 1, after 3 batches
    assert mid_epoch_position(ckpt(2, 2, 6)) is None  # the end of epoch 1
    assert mid_epoch_position(ckpt(2, 1, 0)) is None
    assert mid_epoch_position({}) is None


def _weights(run):
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


class _StopAt:
    """Sends this process SIGTERM after training step ``step`` (as a scheduler would, between two steps)."""

    def __init__(self, step):
        self.step = step

    def __call__(self, trainer, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
@pytest.mark.parametrize("every", [None, 4])
def test_sigterm_inside_an_epoch_then_resume_ends_with_the_uninterrupted_weights(cfg_factory, tmp_path, monkeypatch,
                                                                                 every):
    extra = [f"callbacks.last_checkpoint.every_n_train_steps={every}"] if every else []
    ref_cfg = cfg_factory(*BASE, *extra, sub="ref")
    execute(ref_cfg)
    ref = _weights(tmp_path / "ref" / "run")
    assert ref["global_step"] == 12

    cfg = cfg_factory(*BASE, *extra, sub="job")
    run = tmp_path / "job" / "run"
    from pytorch_lightning import Callback

    from labkit.run import lifecycle

    stop = _StopAt(9)  # epoch 1, after its batch 3 of 6

    class Stopper(Callback):
        def on_train_batch_end(self, trainer, *args):
            stop(trainer)

    real_attach = lifecycle.attach

    def attach(plan, task, clock, loggers=None):
        trainer, loggers = real_attach(plan, task, clock, loggers)
        trainer.callbacks.append(Stopper())
        return trainer, loggers

    monkeypatch.setattr(lifecycle, "attach", attach)
    from labkit.callbacks import Preempted

    with pytest.raises(Preempted):
        execute(cfg)
    monkeypatch.setattr(lifecycle, "attach", real_attach)
    stopped = _weights(run)
    assert stopped["global_step"] == 9 and stopped["epoch"] == 1  # saved where it stopped, inside epoch 1
    assert mid_epoch_position(torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)) == (1, 3)

    resumed = cfg_factory(*BASE, *extra, f"resume={run}", sub="job")
    with open_dict(resumed):
        resumed.paths.output_dir = str(run)
    assert execute(resumed)["status"] == "ok"
    out = _weights(run)
    assert out["global_step"] == 12
    for k, v in ref["state_dict"].items():
        assert torch.equal(v, out["state_dict"][k]), k  # bit for bit
