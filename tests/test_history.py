"""Per-epoch history without TensorBoard: history.csv as the run trains, learning_curves.png, train.log lines."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from labkit.callbacks.history import (
    HISTORY_FILE,
    History,
    append_row,
    curve_panels,
    plot_learning_curves,
    read_csv_rows,
    read_history,
    truncate_history,
)
from labkit.run.lifecycle import execute


def test_csv_appends_widens_and_truncates(tmp_path):
    path = tmp_path / HISTORY_FILE
    append_row(path, {"epoch": 0, "step": 5, "train/loss": 2.0})
    append_row(path, {"epoch": 1, "step": 10, "train/loss": 1.5, "val/loss": 1.7})  # a new column: header widens
    append_row(path, {"epoch": 2, "step": 15, "train/loss": 1.25, "val/loss": 1.5})
    header, rows = read_csv_rows(path)
    assert header == ["epoch", "step", "train/loss", "val/loss"]
    assert [r["epoch"] for r in rows] == [0, 1, 2] and rows[0]["val/loss"] is None and rows[2]["val/loss"] == 1.5
    # a kill in the middle of a write leaves half a line: it is ignored, then cut away when the run resumes
    with open(path, "a") as f:
        f.write("3,20,1.1")
    assert [r["epoch"] for r in read_csv_rows(path)[1]] == [0, 1, 2]
    assert truncate_history(path, 2) == 1  # resuming at epoch 2: epoch 2 will be trained again
    assert [r["epoch"] for r in read_history(tmp_path)] == [0, 1]
    assert path.read_text().endswith("\n") and "3,20" not in path.read_text()
    assert truncate_history(path, 5) == 0 and truncate_history(tmp_path / "none.csv", 0) == 0


class _Tiny(pl.LightningModule):
    monitor = ("val/loss", "min")

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def _loss(self, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self._loss(batch), on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=16)


def _fit(run: Path, max_epochs: int, ckpt: Path | None = None) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=max_epochs, callbacks=[History(str(run))], logger=False, accelerator="cpu",
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         default_root_dir=str(run))
    trainer.fit(_Tiny(), _loader(), _loader(), ckpt_path=str(ckpt) if ckpt else None)
    trainer.save_checkpoint(run / "last.ckpt")
    return trainer


def test_resume_continues_the_history_without_duplicate_epochs(tmp_path):
    run = tmp_path / "run"
    _fit(run, 2)
    first = read_history(run)
    assert [r["epoch"] for r in first] == [0, 1] and [r["step"] for r in first] == [4, 8]
    assert all(r["lr"] == 0.05 and r["val/loss"] > 0 and r["train/loss"] > 0 for r in first)
    # killed after writing the epoch-2 row but before saving its checkpoint: the resumed run trains epoch 2 again
    append_row(run / HISTORY_FILE, {"epoch": 2, "step": 12, "train/loss": -1.0, "val/loss": -1.0})
    _fit(run, 4, ckpt=run / "last.ckpt")
    rows = read_history(run)
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert rows[:2] == first and rows[2]["val/loss"] > 0 and rows[3]["step"] == 16
    walls = [r["wall_time_s"] for r in rows]
    assert walls == sorted(walls) and walls[2] >= walls[1]  # the resumed run's clock continues
    assert rows[3]["val/loss"] < rows[0]["val/loss"]

    # killed between saving the epoch-3 checkpoint and writing epoch 3's row: the checkpoint brings the row back
    truncate_history(run / HISTORY_FILE, 3)
    _fit(run, 5, ckpt=run / "last.ckpt")
    again = read_history(run)
    assert [r["epoch"] for r in again] == [0, 1, 2, 3, 4] and again[3]["val/loss"] == rows[3]["val/loss"]
    png = run / "learning_curves.png"
    assert png.stat().st_size > 5000


@pytest.mark.slow
def test_training_writes_history_curves_and_one_log_line_per_epoch(cfg_factory, caplog):
    cfg = cfg_factory("trainer.max_epochs=3", "logger=none", "data.batch_size=128")
    with caplog.at_level(logging.INFO, logger="labkit"):
        metrics = execute(cfg)
    run = Path(cfg.paths.output_dir)
    rows = read_history(run)
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert rows[-1]["val/acc"] == pytest.approx(metrics["val/acc"])
    assert rows[-1]["train/loss"] == pytest.approx(metrics["train/loss"])
    assert rows[-1]["step"] == metrics["global_step"] and all(r["lr"] == cfg.task.optimizer.lr for r in rows)
    header = read_csv_rows(run / HISTORY_FILE)[0]
    assert {"train/acc", "val/loss", "wall_time_s", "epoch_time_s"} <= set(header)
    assert not any(h.endswith(("_step", "_epoch")) for h in header)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 3 and "epoch 2 (3 of 3)" in lines[-1] and "val/acc" in lines[-1]
    assert (run / "learning_curves.png").stat().st_size > 5000


def test_learning_curves_show_the_loss_and_every_metric_the_task_logged(tmp_path):
    import matplotlib.image

    rows = [{"epoch": e, "train/loss": 1 / (e + 1), "val/loss": 1.2 / (e + 1), "train/acc": 0.5 + e / 10,
             "val/acc": 0.45 + e / 10} for e in range(4)]
    wide = plot_learning_curves(rows, "val/acc", tmp_path / "acc.png")
    losses = [{k: v for k, v in r.items() if "acc" not in k} for r in rows]
    narrow = plot_learning_curves(losses, "val/loss", tmp_path / "loss.png")
    # two panels (loss, acc) for a classifier, one (loss) for a history of losses only
    assert matplotlib.image.imread(wide).shape[1] > 1.6 * matplotlib.image.imread(narrow).shape[1]
    # a task that monitors its loss still shows its accuracy
    assert curve_panels(rows, "val/loss") == ["loss", "acc"] == curve_panels(rows, "val/acc")
    assert plot_learning_curves([{"epoch": 0}], "val/loss", tmp_path / "none.png") is None


@pytest.mark.slow
def test_a_triplet_runs_learning_curves_show_its_triplet_accuracy(cfg_factory, tmp_path):
    """Issue 21: a triplet run monitors val/loss; its curves showed only the loss, not triplet_acc."""
    import matplotlib.image

    cfg = cfg_factory("task=triplet", "model=embedding_net", "logger=none", "test=false", "trainer.max_epochs=2",
                      "trainer.limit_train_batches=2", "trainer.limit_val_batches=1")
    execute(cfg)
    run = Path(cfg.paths.output_dir)
    rows = read_history(run)
    panels = curve_panels(rows, "val/loss")
    assert panels[:2] == ["loss", "triplet_acc"] and {"dist_pos", "dist_neg"} <= set(panels)
    one = plot_learning_curves([{"epoch": 0, "val/loss": 1.0}], "val/loss", tmp_path / "one.png")
    height, width = matplotlib.image.imread(run / "learning_curves.png").shape[:2]
    one_height, one_width = matplotlib.image.imread(one).shape[:2]
    assert width > 2.5 * one_width and height > 1.6 * one_height  # three panels a row, two rows


def test_runs_without_history_csv_fall_back_to_the_csv_logger_file(tmp_path):
    """Lightning's CSVLogger (logger=csv) writes step and epoch rows separately; read_history merges them."""
    path = tmp_path / "csv" / "metrics.csv"
    path.parent.mkdir()
    path.write_text("epoch,lr-SGD,step,train/loss_epoch,train/loss_step,val/acc,val/loss\n"
                    "0,,9,,2.1,,\n0,,20,,,0.5,1.9\n0,,20,2.0,,,\n0,0.01,20,,,,\n"
                    "1,,29,,1.4,,\n1,,41,,,0.7,1.2\n1,,41,1.5,,,\n")
    rows = read_history(tmp_path)
    assert [r["epoch"] for r in rows] == [0, 1]
    assert rows[0]["train/loss"] == 2.0 and rows[0]["val/acc"] == 0.5 and rows[1]["val/loss"] == 1.2
    assert "train/loss_step" not in rows[0] and rows[1]["step"] == 41
