"""Metric learning's composable parts: task.loss, task.miner, task.distance and task.reducer as _target_ nodes
(conf/task/{loss,miner,distance,reducer}/, labkit/schemas/metric.py): the defaults train as before, any
pytorch-metric-learning (PML) class composes, and a part the task cannot use is refused naming it and the choices."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from labkit.core.errors import ConfigError
from labkit.data.batches import PairBatch, TripletBatch
from labkit.run.validate import validate
from labkit.tasks.metric import SiameseTask, TripletTask, contrastive_loss

EMB = {"_target_": "labkit.models.embedding.EmbeddingNet"}
PML = "pytorch_metric_learning"


def _task(cfg_factory, *overrides: str):
    cfg = cfg_factory("model=embedding_net", *overrides)
    torch.manual_seed(0)
    return instantiate(cfg.task, model=OmegaConf.to_container(cfg.model, resolve=True))


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def _pairs(n: int = 12) -> PairBatch:
    y1, y2 = torch.arange(n) % 3, (torch.arange(n) // 2) % 3
    return PairBatch(_images(n, 1), _images(n, 2), (y1 != y2).long(), y1, y2)


def _triplets(n: int = 12) -> TripletBatch:
    ya = torch.arange(n) % 3
    return TripletBatch(_images(n, 1), _images(n, 2), _images(n, 3), ya, ya, (ya + 1) % 3)


def _old_mined_parts(miner: str, margin: float):
    """What TripletTask built for task.miner=batch_hard|semi_hard before the parts were config nodes."""
    from pytorch_metric_learning import losses, miners
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.reducers import MeanReducer

    dist = LpDistance(normalize_embeddings=False, p=2)
    m = (miners.BatchHardMiner(distance=dist) if miner == "batch_hard"
         else miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard", distance=dist))
    return m, losses.TripletMarginLoss(margin=margin, distance=dist, reducer=MeanReducer())


def _loss_and_grad(task, batch, stage="train"):
    task.zero_grad()
    loss = task._step(batch, stage)
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in task.model.parameters()])


# ----- the defaults train as before ----------------------------------------------------------------------------------
def test_default_siamese_and_triplet_losses_are_the_notes(cfg_factory, monkeypatch):
    siamese = _task(cfg_factory, "task=siamese", "task.margin=3")
    triplet = _task(cfg_factory, "task=triplet")
    assert type(siamese.criterion).__name__ == "ContrastiveLoss" and siamese.criterion.margin == 3.0
    assert isinstance(triplet.criterion, torch.nn.TripletMarginLoss) and triplet.criterion.margin == 1.0
    assert siamese.miner is None and triplet.miner is None
    assert (siamese.sampling, triplet.sampling) == ("pairs", "triplets")
    monkeypatch.setattr(siamese, "log", lambda *a, **k: None)
    monkeypatch.setattr(triplet, "log", lambda *a, **k: None)
    b = _pairs()
    phi = siamese.embed(torch.cat([b.x1, b.x2]))
    assert siamese._step(b, "val").item() == pytest.approx(contrastive_loss(phi[:12], phi[12:], b.target, 3.0).item())
    t = _triplets()
    phi = triplet.embed(torch.cat([t.anchor, t.positive, t.negative]))
    ref = F.triplet_margin_loss(phi[:12], phi[12:24], phi[24:], margin=1.0)
    assert triplet._step(t, "val").item() == pytest.approx(ref.item())


@pytest.mark.parametrize("miner", ["batch_hard", "semi_hard"])
def test_mining_trains_as_the_former_miner_words(cfg_factory, monkeypatch, miner):
    """task/loss=pml_triplet_margin task/miner=<m> (the fast preset's) computes what task.miner=<m> did: the same
    mined triplets, loss and gradients; and a checkpoint's former miner word builds the same parts."""
    new = _task(cfg_factory, "task=triplet", "task/loss=pml_triplet_margin", f"task/miner={miner}",
                "task.margin=0.5")
    torch.manual_seed(0)
    old_words = TripletTask(EMB, miner=miner, margin=0.5)  # a checkpoint's hyperparameters before the change
    assert new.sampling == old_words.sampling == "single"
    assert new.hparams.miner == old_words.hparams.miner and new.hparams.loss["margin"] == 0.5
    for task in (new, old_words):
        monkeypatch.setattr(task, "log", lambda *a, **k: None)
    x, y = _images(32, 4), torch.arange(32) % 4
    old_miner, old_loss = _old_mined_parts(miner, 0.5)
    phi = new.embed(x)
    ref = old_loss(phi, y, old_miner(phi, y))
    for task in (new, old_words):
        assert task.model.state_dict()["fc.1.weight"].equal(new.model.state_dict()["fc.1.weight"])
        loss, grad = _loss_and_grad(task, (x, y))
        assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
        new.zero_grad()
        ref_grad = torch.autograd.grad(old_loss(new.embed(x), y, old_miner(new.embed(x), y)),
                                       list(new.model.parameters()))
        assert torch.allclose(grad, torch.cat([g.flatten() for g in ref_grad]), atol=1e-7)
    assert new._step((x, y), "val").item() == pytest.approx(old_loss(phi, y).item(), rel=1e-6)


def test_the_presets_keep_their_parts(cfg_factory):
    fast = cfg_factory("experiment=triplet_mnist_fast").task
    assert fast.miner._target_ == f"{PML}.miners.TripletMarginMiner" and fast.miner.type_of_triplets == "semihard"
    assert fast.loss._target_ == f"{PML}.losses.TripletMarginLoss" and fast.loss.margin == fast.miner.margin == 1.0
    assert fast.distance.normalize_embeddings is False and fast.reducer._target_.endswith("MeanReducer")
    for preset, loss in (("triplet_mnist", "torch.nn.TripletMarginLoss"),
                         ("siamese_mnist", "labkit.tasks.losses.ContrastiveLoss")):
        task = cfg_factory(f"experiment={preset}").task
        assert task.loss._target_ == loss and task.miner is None and task.loss.margin == task.margin


# ----- any PML class composes ----------------------------------------------------------------------------------------
def test_a_pml_loss_on_the_fixed_tuples(cfg_factory, monkeypatch):
    """A PML loss takes the data module's fixed pairs/triplets as its indices_tuple."""
    triplet = _task(cfg_factory, "task=triplet", "task/loss=pml_triplet_margin")
    monkeypatch.setattr(triplet, "log", lambda *a, **k: None)
    t = _triplets()
    phi = triplet.embed(torch.cat([t.anchor, t.positive, t.negative]))
    ref = F.triplet_margin_loss(phi[:12], phi[12:24], phi[24:], margin=1.0, eps=0.0)
    assert triplet.loss_takes == "embeddings" and triplet.sampling == "triplets"
    assert triplet._step(t, "val").item() == pytest.approx(ref.item(), rel=1e-4)

    siamese = _task(cfg_factory, "task=siamese", "task/loss=pml_contrastive", "task.margin=5")
    monkeypatch.setattr(siamese, "log", lambda *a, **k: None)
    b = _pairs()
    phi = siamese.embed(torch.cat([b.x1, b.x2]))
    d = F.pairwise_distance(phi[:12], phi[12:], eps=0.0)
    same = b.target == 0
    ref = d[same].mean() + (5.0 - d[~same]).clamp(min=0).mean()  # PML: the mean of each pair kind, added
    assert siamese._step(b, "val").item() == pytest.approx(ref.item(), rel=1e-4)


def test_a_pml_class_without_a_schema_and_a_pair_miner_on_siamese(cfg_factory, monkeypatch):
    """Any PML loss (here CircleLoss, which labkit's schemas do not list) with a PML pair miner, on the siamese task:
    labelled batches of single images, the mined count logged."""
    task = SiameseTask(EMB, loss={"_target_": f"{PML}.losses.CircleLoss", "m": 0.25},
                       miner={"_target_": f"{PML}.miners.PairMarginMiner", "pos_margin": 0.0, "neg_margin": 100.0},
                       distance={"_target_": f"{PML}.distances.CosineSimilarity"})
    assert type(task.criterion).__name__ == "CircleLoss" and task.criterion.m == 0.25
    assert type(task.criterion.distance).__name__ == "CosineSimilarity" and task.miner.distance is not None
    assert task.sampling == "single"
    logged = {}
    monkeypatch.setattr(task, "log", lambda name, value, **k: logged.__setitem__(name, value))
    loss = task.training_step((_images(16, 5), torch.arange(16) % 4), 0)
    assert torch.isfinite(loss) and loss.requires_grad and logged["train/mined"].item() > 0
    assert "train/mined" in SiameseTask.logged_metrics


# ----- what cannot work is refused, naming the value and the choices -------------------------------------------------
def test_a_miner_needs_a_pml_loss(cfg_factory):
    with pytest.raises(ConfigError) as e:
        validate(cfg_factory("task=siamese", "model=embedding_net", "task/miner=semi_hard"))  # the pre-flight
    text = str(e.value)
    assert "task.miner='pytorch_metric_learning.miners.TripletMarginMiner' is invalid" in text
    assert "task/loss=pml_triplet_margin|pml_contrastive|multi_similarity" in text
    with pytest.raises(ConfigError, match="task.miner=.*BatchHardMiner.* is invalid: it must be null with"):
        TripletTask(EMB, miner={"_target_": f"{PML}.miners.BatchHardMiner"})  # the constructor too


@pytest.mark.parametrize("overrides, phrase", [
    (("task=triplet", "task/distance=cosine"),
     "task.distance='pytorch_metric_learning.distances.CosineSimilarity' is invalid: it must be the Euclidean"),
    (("task=triplet", "task/distance=normalized_euclidean"), "task.distance='pytorch_metric_learning.distances.Lp"),
    (("task=siamese", "task/reducer=avg_non_zero"), "task.reducer='pytorch_metric_learning.reducers.AvgNonZero"),
    (("task=siamese", "task/loss=triplet_margin"),
     "task.loss='torch.nn.TripletMarginLoss' is invalid: it must be a loss on pairs"),
    (("task=triplet", "task.miner=semi_hard"), "Did you mean 'task/miner=semi_hard'?"),
    (("task=triplet", "+task.miner={_target_:pytorch_metric_learning.losses.TripletMarginLoss}"),
     "task.miner='pytorch_metric_learning.losses.TripletMarginLoss' is invalid: it must be a miner, but"),
])
def test_parts_the_task_cannot_use_are_refused(cfg_factory, overrides, phrase):
    with pytest.raises(ConfigError) as e:
        validate(cfg_factory("model=embedding_net", *overrides))
    assert phrase in str(e.value), str(e.value)
    assert "task/loss=pml_triplet_margin|pml_contrastive|multi_similarity" in str(e.value) or \
        "choose one of conf/task/" in str(e.value)  # how to get what is wanted, or the choices


def test_a_class_of_the_wrong_kind_without_a_schema_is_refused_when_built():
    with pytest.raises(ConfigError, match=r"task.miner='torch.nn.Identity' is invalid: it must be a "
                                          r"pytorch-metric-learning miner .*batch_hard\|"):
        TripletTask(EMB, loss={"_target_": f"{PML}.losses.TripletMarginLoss"}, miner={"_target_": "torch.nn.Identity"})
    with pytest.raises(ConfigError, match="task.distance=.*is invalid: it must be the Euclidean"):
        TripletTask(EMB, distance={"_target_": f"{PML}.distances.LpDistance"})  # normalized: not the notes' distance
