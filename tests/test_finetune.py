"""Fine-tuning: init_from another run, frozen backbone with an unfreeze epoch, early stopping."""
from __future__ import annotations

import logging

import pytest
import pytorch_lightning as pl
import torch
from conftest import make_cfg

from labkit.callbacks import UnfreezeBackbone
from labkit.core.errors import ConfigError, IncompatibleError
from labkit.core.safe_load import load_checkpoint, state_dict_of
from labkit.models import MLP, LeNet, MiniAlexNetV4, zoo
from labkit.models.heads import find_head, head_parameter_names
from labkit.models.init import init_from
from labkit.run.lifecycle import build, execute
from labkit.run.plan import make, source_checkpoint
from labkit.tasks import ClassificationTask

SHORT = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "logger=none", "test=false"]


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    """A finished one-epoch LeNet run on digits (10 classes): its run directory."""
    tmp = tmp_path_factory.mktemp("source")
    execute(make_cfg(["model=lenet", "data=digits", "trainer.max_epochs=1", *SHORT], tmp))
    return tmp / "run"


@pytest.mark.slow
def test_init_from_run_keeps_matching_layers_and_renews_the_head(lenet_run, caplog):
    source = state_dict_of(load_checkpoint(next((lenet_run / "checkpoints").glob("*.ckpt"))))
    torch.manual_seed(1)
    model = LeNet(1, 28, num_classes=5)
    head_before = model.classifier[4].weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="labkit"):
        report = init_from(model, source_checkpoint(lenet_run))
    assert report["new"] == ["classifier.4.weight", "classifier.4.bias"]
    assert set(report["skipped"]) == {"classifier.4.weight", "classifier.4.bias"}
    assert set(report["kept"]) == set(model.state_dict()) - set(report["new"])
    own = model.state_dict()
    for k in report["kept"]:
        assert torch.equal(own[k], source[k]), k  # bit for bit
    assert torch.equal(model.classifier[4].weight, head_before)  # the head keeps its fresh initialization
    assert "kept 8 tensors" in caplog.text and "classifier.4" in caplog.text and "new" in caplog.text


@pytest.mark.slow
def test_init_from_through_the_run_config(lenet_run, tmp_path, cfg_factory):
    from labkit.run.lifecycle import build

    ckpt = next((lenet_run / "checkpoints").glob("*.ckpt"))
    _, task, _ = build(make(cfg_factory("model=lenet", "data.num_classes=3", f"init_from={ckpt}", sub="init")))
    model = task.model
    source = state_dict_of(load_checkpoint(ckpt))
    assert torch.equal(model.features[0].weight, source["features.0.weight"])
    assert model.classifier[4].out_features == 3
    # a plain state_dict file works as well
    torch.save(source, tmp_path / "weights.pt")
    report = init_from(LeNet(1, 28, 10), tmp_path / "weights.pt")
    assert report["new"] == [] and report["skipped"] == []


def test_init_from_with_nothing_in_common(lenet_run):
    with pytest.raises(IncompatibleError, match="no tensor matches"):
        init_from(MLP(1, 28, 10), source_checkpoint(lenet_run))
    with pytest.raises(FileNotFoundError):
        init_from(LeNet(), source_checkpoint(lenet_run.parent / "missing"))


def test_cifar100_to_cifar10_preset(cfg_factory, lenet_run):
    from labkit.core.errors import ConfigError
    from labkit.run.plan import make as prepare

    cfg = cfg_factory("experiment=minialexnet_v4_cifar100_to_cifar10", f"init_from={lenet_run}")
    assert cfg.model._target_.endswith("MiniAlexNetV4") and cfg.data._target_.endswith("CIFAR10DataModule")
    assert cfg.trainer.max_epochs == 150 and cfg.data.batch_size == 1024
    assert cfg.task.optimizer.lr == 0.01 and cfg.task.optimizer.momentum == 0.99
    assert cfg.init_from == str(lenet_run)
    bare = cfg_factory("experiment=minialexnet_v4_cifar100_to_cifar10", sub="bare")
    with pytest.raises(ConfigError, match="init_from must be set"):  # must be given
        prepare(bare)


def test_transfer_presets_compose(cfg_factory):
    sq = cfg_factory("experiment=squeezenet_caltech101")
    assert sq.model._target_ == "labkit.models.zoo.squeezenet1_0" and sq.model.pretrained is True
    assert sq.data.batch_size == 32 and sq.trainer.max_epochs == 10 and sq.task.optimizer.momentum == 0.99
    assert sq.model.num_classes == 101 and sq.data._target_.endswith("Caltech101DataModule")
    rn = cfg_factory("experiment=resnet18_caltech101", sub="rn")
    assert rn.task.freeze == "backbone" and rn.task.unfreeze_at_epoch == 2 and "early_stopping" in rn.callbacks


def test_find_head():
    assert find_head(MLP())[0] == "output_layer"
    assert find_head(LeNet())[0] == "classifier.4"
    name, layer = find_head(MiniAlexNetV4(3, 28, 100))
    assert isinstance(layer, torch.nn.Linear) and layer.out_features == 100 and name.startswith("classifier.")
    net = zoo.squeezenet1_0(num_classes=4, image_size=32)
    assert find_head(net)[0] == "classifier.1"
    assert head_parameter_names(net) == ["classifier.1.weight", "classifier.1.bias"]


def test_bad_freeze_settings():
    model = {"_target_": "labkit.models.LeNet"}
    with pytest.raises(ConfigError, match=r"task.freeze='foo'.*backbone"):
        ClassificationTask(model, freeze="foo")
    with pytest.raises(ConfigError, match="task.unfreeze_at_epoch=2 needs task.freeze=backbone"):
        ClassificationTask(model, unfreeze_at_epoch=2)
    with pytest.raises(ConfigError, match="task.unfreeze_at_epoch"):
        ClassificationTask(model, freeze="backbone", unfreeze_at_epoch=-1)
    with pytest.raises(ConfigError, match="task.unfreeze_lr_factor"):
        ClassificationTask(model, freeze="backbone", unfreeze_lr_factor=0)
    assert ClassificationTask(model).configure_callbacks() == []
    cbs = ClassificationTask(model, freeze="backbone", unfreeze_at_epoch=1).configure_callbacks()
    assert len(cbs) == 1 and isinstance(cbs[0], UnfreezeBackbone)


class Snapshots(pl.Callback):
    """Copies of the network's state at every epoch start and at the end of training, plus the LRs."""

    def __init__(self):
        self.states, self.lrs, self.groups = [], [], []

    def _snap(self, trainer, pl_module):
        self.states.append({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()})

    def on_train_epoch_end(self, trainer, pl_module):
        self._snap(trainer, pl_module)
        opt = trainer.optimizers[0]
        self.lrs.append([g["lr"] for g in opt.param_groups])
        self.groups.append(len(opt.param_groups))

    def on_train_start(self, trainer, pl_module):
        self._snap(trainer, pl_module)


@pytest.mark.slow
def test_frozen_backbone_then_unfreeze(cfg_factory, caplog):
    cfg = cfg_factory("model=minialexnet_v4", "data=digits", "task.freeze=backbone", "task.unfreeze_at_epoch=1",
                      "task.unfreeze_lr_factor=0.1", "task/scheduler=cosine", "trainer.max_epochs=2",
                      "data.batch_size=16", *SHORT[:2])
    data, task, _ = build(make(cfg))
    spy = Snapshots()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=2, limit_train_batches=2, limit_val_batches=0,
                         num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         callbacks=[spy])
    with caplog.at_level(logging.INFO, logger="labkit"):
        trainer.fit(task, datamodule=data)
    head = set(head_parameter_names(task.model))
    start, after0, after1 = spy.states
    params = {n for n, _ in task.model.named_parameters()}
    for k in start:
        if k in head:
            assert not torch.equal(start[k], after0[k]), k  # the head trains from the first epoch
        elif k.endswith("num_batches_tracked"):
            continue
        else:
            assert torch.equal(start[k], after0[k]), k  # weights and BatchNorm statistics frozen
    changed = [k for k in params - head if not torch.equal(after0[k], after1[k])]
    assert len(changed) == len(params - head)  # after the unfreeze every backbone weight moves
    # epoch 0: one group (the head) at lr 0.01 under cosine decay; epoch 1: two groups at lr x 0.1
    assert spy.groups == [1, 2]
    assert spy.lrs[1][0] == pytest.approx(spy.lrs[1][1])
    assert spy.lrs[1][0] < 0.1 * 0.01 * 1.0001
    text = caplog.text
    assert "training only the head" in text and "unfreezing the whole network" in text
    n_head = sum(p.numel() for n, p in task.model.named_parameters() if n in head)
    n_all = sum(p.numel() for p in task.model.parameters())
    assert f"{n_head:,} of {n_all:,} parameters trainable" in text
    assert f"{n_all:,} of {n_all:,} parameters trainable" in text


@pytest.mark.slow
def test_freeze_through_train_with_default_callbacks(cfg_factory):
    cfg = cfg_factory("model=lenet", "data=digits", "task.freeze=backbone", "task.unfreeze_at_epoch=1",
                      "task/scheduler=step", "trainer.max_epochs=2", *SHORT[:3], "logger=csv")
    metrics = execute(cfg)
    assert metrics["status"] == "ok" and metrics["epochs"] == 2
    assert metrics["trainable_params"] == metrics["params"]  # unfrozen at the end
    frozen = cfg_factory("model=lenet", "data=digits", "task.freeze=backbone", "trainer.max_epochs=1", *SHORT,
                         sub="frozen")
    m = execute(frozen)
    assert m["trainable_params"] == 84 * 10 + 10  # only LeNet's last layer


@pytest.mark.slow
def test_early_stopping_stops_training(cfg_factory):
    cfg = cfg_factory("model=lenet", "data=digits", "callbacks=early_stopping", "callbacks.early_stopping.patience=1",
                      "callbacks.early_stopping.min_delta=100", "trainer.max_epochs=20", "data.eval_batch_size=64",
                      *SHORT)
    assert cfg.callbacks.early_stopping._target_ == "pytorch_lightning.callbacks.EarlyStopping"
    metrics = execute(cfg)
    assert metrics["status"] == "ok" and metrics["epochs"] == 2  # epoch 0 sets the best, epoch 1 fails to beat it


def test_every_task_has_one_constructor_style_and_the_common_options():
    """model, then the task's own options, then **kwargs for what LabTask owns (optimizer ... unfreeze_lr_factor)."""
    import inspect

    from labkit.tasks import (
        AutoencoderTask,
        ClassificationTask,
        DenoisingAutoencoderTask,
        SiameseTask,
        SparseAutoencoderTask,
        TripletTask,
    )
    from labkit.tasks.base import LabTask

    common = set(inspect.signature(LabTask.__init__).parameters) - {"self", "model"}
    for cls in (ClassificationTask, AutoencoderTask, DenoisingAutoencoderTask, SparseAutoencoderTask, SiameseTask,
                TripletTask):
        params = list(inspect.signature(cls.__init__).parameters.values())
        assert [p.name for p in params[:2]] == ["self", "model"] and params[-1].kind == params[-1].VAR_KEYWORD, cls
        assert not common & {p.name for p in params}, f"{cls.__name__} repeats LabTask's options"
    emb = {"_target_": "labkit.models.embedding.EmbeddingNet"}
    cbs = TripletTask(emb, freeze="backbone", unfreeze_at_epoch=1, margin=0.5).configure_callbacks()
    assert cbs and TripletTask(emb, margin=0.5).hparams.margin == 0.5 and SiameseTask(emb).hparams.margin == 2.0
