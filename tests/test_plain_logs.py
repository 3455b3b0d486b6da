"""Logs for files and schedulers (nohup, screen, SLURM's .out): with stdout and stderr going to files, train.py,
evaluate.py, a sweep and logger=wandb write plain text (no carriage return, no escape code), progress comes as plain
lines with epoch, step/total, loss, throughput and ETA, and each epoch's line starts a line of its own."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch
from conftest import ROOT
from torch.utils.data import DataLoader, TensorDataset

from labkit.callbacks.progress import (
    PlainProgress,
    TerminalProgressBar,
    count_images,
    format_eta,
    progress_bar,
    progress_line,
)
from labkit.core import console

# a log record of labkit's per-epoch line (labkit.callbacks.history), from the start of a line
EPOCH_LINE = re.compile(r"^\[[^\]\n]+\]\[labkit\]\[INFO\] - epoch (\d+) \((\d+) of (\d+)\): train/", re.M)
# the plain progress line: epoch, step/total, loss, throughput, ETA
STEP_LINE = re.compile(r"^\[[^\]\n]+\]\[labkit\]\[INFO\] - (\[[^\]]+\] )?epoch (\d+) \(\d+ of \d+\) step (\d+)/3 "
                       r"\(\d+%\): loss [\d.]+  [\d.]+ images/s  [\d.]+ batches/s  ETA \d+:\d\d:\d\d epoch, "
                       r"\d+:\d\d:\d\d run$", re.M)
FAST = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=2",
        "callbacks.progress_bar.every_n_steps=1"]


def _run(tmp_path, name: str, script: str, *args: str) -> str:
    """Run a script with stdout and stderr redirected to files, as a scheduler does; returns both, checked plain."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for key in ("PYTHONWARNINGS", "NO_COLOR", "TTY_COMPATIBLE", "TQDM_DISABLE", "LABKIT_PLAIN", "WANDB_MODE", "TERM"):
        env.pop(key, None)  # the child decides by itself, from its own streams
    for key in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        env[key] = str(tmp_path / "wandb_home")
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with open(out, "wb") as o, open(err, "wb") as e:
        code = subprocess.run([sys.executable, str(ROOT / script), *args], stdout=o, stderr=e, env=env,
                              cwd=tmp_path, timeout=600).returncode
    data = out.read_bytes() + b"\n" + err.read_bytes()
    assert code == 0, data[-3000:].decode(errors="replace")
    assert b"\r" not in data, f"{name}: a carriage return"
    assert b"\x1b" not in data, f"{name}: an escape code"
    return data.decode()


def _epoch_lines_stand_alone(text: str) -> list[tuple[int, int, int]]:
    found = [tuple(int(g) for g in m.groups()) for m in EPOCH_LINE.finditer(text)]
    # no epoch line glued after anything else (a bar fragment, another record)
    assert len(found) == len(re.findall(r"epoch \d+ \(\d+ of \d+\): train/", text))
    return found


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plain")
    text = _run(tmp, "train", "train.py", "trainer.max_epochs=2", f"paths.log_dir={tmp / 'logs'}",
                "logger=[tensorboard,wandb]", *FAST)
    (run,) = (tmp / "logs" / "runs").iterdir()
    return tmp, run, text


@pytest.mark.slow
def test_train_with_wandb_logs_plain_lines(trained):
    _, run, text = trained
    assert _epoch_lines_stand_alone(text) == [(0, 1, 2), (1, 2, 2)]
    steps = [(int(m.group(2)), int(m.group(3))) for m in STEP_LINE.finditer(text)]
    assert steps == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)], text
    assert "v_num" not in text and "it/s" not in text  # no bar, no cut-off logger version
    said = re.search(r"wandb: offline run saved in (\S+); upload it with: wandb sync (\S+)$", text, re.M)
    assert said and said.group(1) == said.group(2)  # labkit says where W&B's run is, plainly
    assert said.group(1).startswith(str(run / "wandb" / "offline-run-"))
    assert list(run.glob("wandb/offline-run-*"))  # W&B still wrote its offline run


@pytest.mark.slow
def test_evaluate_and_a_sweep_log_plain_lines(trained):
    tmp, run, _ = trained
    text = _run(tmp, "evaluate", "evaluate.py", f"run={run}")
    assert "accuracy" in text
    text = _run(tmp, "sweep", "train.py", "-m", "seed=0,1", "trainer.max_epochs=1", f"paths.log_dir={tmp / 'logs'}",
                *FAST)
    assert _epoch_lines_stand_alone(text) == [(0, 1, 1), (0, 1, 1)]
    labels = [m.group(1) for m in STEP_LINE.finditer(text)]
    assert labels == ["[0_seed=0] "] * 3 + ["[1_seed=1] "] * 3  # the jobs' readable names, whole
    assert "v_num" not in text and "2 ok" in text


# ----- in-process: the line, the choice, the callback -----------------------------------------------------------
def test_progress_line_has_the_fields():
    line = progress_line("train", 120, 422, epoch=0, max_epochs=15, loss=0.41271, images_per_s=3187.4,
                         batches_per_s=24.9, eta_s=12.2, run_eta_s=245.0)
    assert line == ("epoch 0 (1 of 15) step 120/422 (28%): loss 0.4127  3187 images/s  24.9 batches/s  "
                    "ETA 0:00:12 epoch, 0:04:05 run")
    assert progress_line("validation", 5, 50, batches_per_s=2.0, eta_s=22.5, name="3_task=siamese") == \
        "[3_task=siamese] validation step 5/50 (10%): 2 batches/s  ETA 0:00:22"
    assert progress_line("train", 7, float("inf"), epoch=2) == "epoch 2 step 7"  # an endless loader: no total
    assert format_eta(None) == "?" and format_eta(90061) == "1 day, 1:01:01"
    pair = (torch.zeros(4, 1, 8, 8), torch.zeros(4, 1, 8, 8), torch.zeros(4), torch.zeros(4), torch.zeros(4))
    assert count_images(pair) == 8 and count_images([torch.zeros(5, 3)]) == 0


class _Terminal:
    def __init__(self, stream):
        self.stream = stream

    def isatty(self):
        return True

    def write(self, s):
        return self.stream.write(s)

    def flush(self):
        self.stream.flush()


def test_plain_is_decided_in_one_place(monkeypatch):
    import io

    monkeypatch.setattr(console, "_forced", None)
    monkeypatch.delenv("LABKIT_PLAIN", raising=False)
    monkeypatch.delenv("TERM", raising=False)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    terminal, file = _Terminal(io.StringIO()), io.StringIO()
    for out, err, plain in ((terminal, terminal, False), (file, terminal, True), (terminal, file, True),
                            (file, file, True)):
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(sys, "stderr", err)
        assert console.plain() is plain and console.interactive() is not plain
    monkeypatch.setenv("TERM", "dumb")
    assert console.plain()  # a terminal that cannot move the cursor
    monkeypatch.delenv("TERM")
    monkeypatch.setenv("LABKIT_PLAIN", "1")
    assert console.plain() and isinstance(progress_bar(), PlainProgress)
    monkeypatch.setenv("LABKIT_PLAIN", "0")
    monkeypatch.setattr(sys, "stdout", file)
    assert not console.plain() and isinstance(progress_bar(), TerminalProgressBar)
    bar = progress_bar(plain=True, every_n_steps=5)  # the config switch wins over the environment ...
    assert isinstance(bar, PlainProgress) and console.plain()  # ... and holds for the process (labkit's bars, W&B)
    progress_bar(plain=None)  # the next run decides again
    assert not console.plain()


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(16, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x.flatten(1)), y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_plain_progress_callback_writes_the_lines(tmp_path, caplog):
    data = DataLoader(TensorDataset(torch.randn(24, 1, 4, 4), torch.randn(24, 1)), batch_size=4)  # 6 batches
    bar = PlainProgress(every_n_steps=2, every_s=None)
    trainer = pl.Trainer(max_epochs=2, callbacks=[bar], logger=False, enable_checkpointing=False,
                         enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu", devices=1)
    assert trainer.progress_bar_callback is bar  # Lightning adds no bar of its own
    with caplog.at_level(logging.INFO, logger="labkit"):
        trainer.fit(_Tiny(), data)
    lines = [r.getMessage() for r in caplog.records if r.name == "labkit"]
    assert [ln.split(":")[0] for ln in lines] == [f"epoch {e} ({e + 1} of 2) step {s}/6 ({round(100 * s / 6)}%)"
                                                  for e in (0, 1) for s in (2, 4, 6)]
    for ln in lines:
        assert re.search(r": loss [\d.e-]+  [\d.]+ images/s  [\d.]+ batches/s  ETA \d:\d\d:\d\d epoch, "
                         r"\d:\d\d:\d\d run$", ln), ln
    assert "images/s" in lines[0] and "\r" not in "".join(lines)
