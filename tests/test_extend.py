"""ARCHITECTURE.md's recipe: a model, a dataset and a task are each one Python module plus one YAML file.

The three pieces below live in a temporary folder outside the labkit package (its Python modules on
``sys.path``, its ``conf/`` added with ``hydra.searchpath``); nothing in labkit is edited or registered,
and a run trains, tests, and is evaluated with them.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import torch
from conftest import make_cfg
from omegaconf import OmegaConf

from labkit.cli.evaluate import evaluate
from labkit.run.lifecycle import execute

MODEL = '''
from torch import nn


class TinyNet(nn.Module):
    """conv(C->width, 3) -> ReLU -> global average -> out = Linear(width, num_classes)."""

    labkit_head = "out"  # the head protocol (labkit.models.heads): task.freeze=backbone trains only this layer

    def __init__(self, in_channels=1, image_size=12, num_classes=2, width=8):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.out(self.features(x))
'''

DATA = '''
import torch

from labkit.data import InMemoryImageDataModule
from labkit.data.memory import Split


class StripesDataModule(InMemoryImageDataModule):
    """Noise images with a bright row every num_classes rows, starting at row = the class."""

    name = "stripes"

    def __init__(self, n_train=96, n_test=32, **kwargs):
        super().__init__(**kwargs)
        self.n_train, self.n_test = n_train, n_test

    def _make(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        s, k = self.image_size, self.num_classes
        y = torch.arange(n) % k
        x = torch.randint(0, 60, (n, self.channels, s, s), generator=g, dtype=torch.uint8)
        for c in range(k):
            x[y == c, :, c::k, :] = 255
        return Split(x, y)

    def load(self):
        return self._make(self.n_train, self.seed), self._make(self.n_test, self.seed + 1)
'''

TASK = '''
import torch.nn.functional as F

from labkit.tasks import LabTask


class HingeTask(LabTask):
    """Multi-class hinge loss (F.multi_margin_loss) on the network's scores; logs loss and accuracy."""

    monitor = ("val/acc", "max")
    evaluations = ("retrieval",)

    def __init__(self, model, margin=1.0, **kwargs):
        super().__init__(model, **kwargs)
        self.save_hyperparameters({"margin": margin})

    def _step(self, batch, stage):
        x, y = batch
        scores = self(x)
        loss = F.multi_margin_loss(scores, y, margin=self.hparams.margin)
        self.log(f"{stage}/loss", loss, on_epoch=True, on_step=False, batch_size=len(y))
        self.log(f"{stage}/acc", (scores.argmax(1) == y).float().mean(), on_epoch=True, on_step=False,
                 batch_size=len(y))
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")
'''

YAMLS = {
    "model/tiny_net.yaml": """
        _target_: labkit_toy_model.TinyNet
        in_channels: ${data.channels}
        image_size: ${data.image_size}
        num_classes: ${data.num_classes}
        width: 8
    """,
    "data/stripes.yaml": """
        _target_: labkit_toy_data.StripesDataModule
        data_dir: ${paths.data_dir}
        channels: 1
        image_size: 12
        num_classes: 3
        batch_size: 16
        seed: ${seed}
        val_size: 0.25
        n_train: 96
        n_test: 30
    """,
    "task/hinge.yaml": """
        _target_: labkit_toy_task.HingeTask
        _recursive_: false
        defaults:
          - optimizer: sgd
          - scheduler: none
        margin: 1.0
        # labkit's common task options (LabTask): declared here so that task.freeze=... can be set
        freeze: null
    """,
}


def _write_toy_folder(root: Path) -> Path:
    for name, text in (("labkit_toy_model", MODEL), ("labkit_toy_data", DATA), ("labkit_toy_task", TASK)):
        (root / f"{name}.py").write_text(text)
    for rel, text in YAMLS.items():
        path = root / "conf" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root / "conf"


def test_a_model_a_dataset_and_a_task_from_outside_labkit(tmp_path, monkeypatch):
    toy = tmp_path / "toy"
    toy.mkdir()
    conf = _write_toy_folder(toy)
    monkeypatch.syspath_prepend(str(toy))
    cfg = make_cfg([f"hydra.searchpath=[file://{conf}]", "model=tiny_net", "data=stripes", "task=hinge",
                    "task.freeze=backbone", "task.optimizer.lr=0.1", "trainer.max_epochs=1", "logger=csv"],
                   tmp_path)
    assert cfg.model._target_ == "labkit_toy_model.TinyNet" and cfg.model.num_classes == 3
    metrics = execute(cfg)

    run = tmp_path / "run"
    assert metrics["status"] == "ok" and metrics["epochs"] == 1
    assert json.loads((run / "metrics.json").read_text())["status"] == "ok"
    # the toy network on the toy data: conv 1->8 (3x3) = 80 parameters, head Linear(8, 3) = 27
    assert metrics["params"] == 80 + 27
    # task.freeze=backbone found the head the toy model declares (labkit_head = "out")
    assert metrics["trainable_params"] == 27
    for key in ("val/acc", "test/acc", "test/loss"):
        assert 0.0 <= metrics[key] <= (1.0 if key.endswith("acc") else float("inf")), key
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.task._target_ == "labkit_toy_task.HingeTask" and saved.data._target_.endswith("StripesDataModule")
    ckpt = torch.load(Path(cfg.paths.output_dir) / metrics["best_checkpoint"], map_location="cpu", weights_only=True)
    assert set(ckpt["state_dict"]) == {"model.features.0.weight", "model.features.0.bias", "model.out.weight",
                                       "model.out.bias"}

    # the run's report (HingeTask.evaluations) works through the same contracts: the retrieval report
    # embeds with the input of the declared head (8 values) and queries the test split against train
    ev = make_cfg([f"run={run}", "tsne_samples=0"], tmp_path / "eval", "evaluate")
    report = evaluate(ev)["retrieval"]
    assert report["embedding_dim"] == 8 and "input of out" in report["embedding"]
    assert report["query_samples"] == 30 and report["gallery_samples"] == 72
    assert 0.0 <= report["map_at_r"] <= 1.0
