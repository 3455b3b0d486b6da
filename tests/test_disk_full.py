"""Full disks (issue 20, item 4): ``No space left on device`` ends a run with one paragraph naming the folder and the
space a checkpoint needs; the last complete checkpoint stays, no temporary is left, and a resume finishes once there
is room again.

The full disk is injected into labkit.core.files (its writes of checkpoint temporaries write half the bytes, then
fail with ENOSPC); where this process may mount a filesystem (root on Linux), the same run also goes onto a real
tmpfs too small for its second epoch's checkpoint, which is then grown.
"""
from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_cfg

from labkit.cli import app
from labkit.cli.train import cli
from labkit.core import files
from labkit.core.errors import DiskFullError

FAST = ("trainer.accelerator=cpu", "trainer.devices=1", "trainer.enable_progress_bar=false",
        "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "logger=none")


class _HalfWrite:
    """A file whose write puts half the bytes on disk, then finds the device full (or the quota used up)."""

    def __init__(self, f, err: int):
        self.f, self.err = f, err

    def write(self, data) -> int:
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError(self.err, os.strerror(self.err))

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


class FullDisk:
    """``os`` as labkit.core.files sees it, on a disk with room for ``room`` more checkpoints (then ENOSPC)."""

    def __init__(self, room: int, err: int = errno.ENOSPC):
        self.room, self.err, self.refused = room, err, 0
        self._paths: dict[int, str] = {}

    def __getattr__(self, name):
        return getattr(os, name)

    def open(self, path, flags, mode=0o777):
        fd = os.open(path, flags, mode)
        self._paths[fd] = str(path)
        return fd

    def fdopen(self, fd, *args, **kwargs):
        f = os.fdopen(fd, *args, **kwargs)
        if ".ckpt." not in Path(self._paths.pop(fd, "")).name:  # a checkpoint's temporary: .last.ckpt.<pid>-...
            return f
        if self.room > 0:
            self.room -= 1
            return f
        self.refused += 1
        return _HalfWrite(f, self.err)


def _train(log_dir: Path, tmp: Path, *args: str) -> int:
    try:
        cli([f"paths.log_dir={log_dir}", f"paths.data_dir={tmp / 'data'}", *FAST, *args])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


def _the_one_error(out) -> str:
    text = out.out + out.err
    assert "Traceback" not in text, text[-3000:]
    lines = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and text.count("error: ") == 1, text[-3000:]
    return lines[0]


def _check_stopped_and_resumable(log_dir: Path, code: int, out) -> Path:
    """The run ended with the one paragraph, kept epoch 0's checkpoints whole and left no temporary: its run dir."""
    assert code == 1
    (run,) = sorted(p for p in (log_dir / "runs").iterdir() if p.is_dir())
    line = _the_one_error(out)
    assert "no space left on device" in line and f"in {run / 'checkpoints'} " in line, line
    assert "A checkpoint of this run needs" in line and "free there" in line, line
    assert f"python train.py resume={run}" in line, line
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 0 and last["state_dict"]  # the last complete checkpoint, whole
    assert (run / "checkpoints" / "epoch000.ckpt").is_file()
    assert not [p for p in run.rglob("*") if files.is_temporary(p)]
    assert files.read_json(run / "metrics.json")["status"] == "failed"
    return run


def _check_resumed(log_dir: Path, tmp: Path, run: Path, capsys) -> None:
    assert _train(log_dir, tmp, f"resume={run}", "trainer.max_epochs=2") == 0, capsys.readouterr().err[-3000:]
    metrics = files.read_json(run / "metrics.json")
    assert metrics["status"] == "ok" and metrics["epochs"] == 2
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 1


# ----- one write ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("err, says", [(errno.ENOSPC, "no space left on device"),
                                       (errno.EDQUOT, "the disk quota is used up")])
def test_a_full_disk_keeps_the_old_file_and_says_where_and_how_much(err, says, tmp_path, monkeypatch):
    target = tmp_path / "run" / "checkpoints" / "last.ckpt"
    files.atomic_write_bytes(target, b"old" * 100)
    monkeypatch.setattr(files, "os", FullDisk(room=0, err=err))
    with pytest.raises(DiskFullError) as e:
        files.atomic_write_bytes(target, b"x" * 12_345)
    assert e.value.errno == err and isinstance(e.value, OSError)
    assert e.value.folder == target.parent and e.value.needed == 12_345 and e.value.free > 0
    text = str(e.value)
    assert text.startswith(f"{says}: writing last.ckpt (12.3 kB) in {target.parent} failed, with "), text
    assert "A checkpoint of this run needs 12.3 kB (the size of the one being written)" in text
    assert f"python train.py resume={tmp_path / 'run'}" in text and "\n" not in text
    assert target.read_bytes() == b"old" * 100  # the previous file is whole
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # the half-written temporary is gone


def test_a_full_disk_elsewhere_names_the_runs_last_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    files.atomic_write_bytes(run / "checkpoints" / "last.ckpt", b"c" * 2_000)
    files.atomic_write_bytes(run / "config.yaml", b"{}")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "os", type("Os", (), {"__getattr__": lambda self, n: getattr(os, n),
                                                     "fdopen": staticmethod(full)})())
    with pytest.raises(DiskFullError, match=r"writing history.csv \(5 bytes\) in .* needs about 2.0 kB \(the size of "
                                            r"its last one\)"):
        files.atomic_write_text(run / "history.csv", "a,b\n\n")


def test_a_full_disk_outside_labkits_writes_is_one_paragraph_too(tmp_path):
    e = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "logs" / "train.log"))
    assert app.is_user_error(e) and app.is_user_error(DiskFullError("x"))
    text = app.message(e)
    assert text.startswith(f"no space left on device: writing train.log in {tmp_path / 'logs'} failed")
    assert not app.is_user_error(OSError(errno.EIO, "Input/output error"))
    from hydra.errors import InstantiationException

    wrapped = InstantiationException("Error in call to target")
    wrapped.__cause__ = e
    assert app.is_user_error(wrapped)


def test_logging_on_a_full_disk_prints_no_traceback(capsys):
    """While a job runs, a log file that cannot be written stays silent (no '--- Logging error ---'), and a record
    carrying a full disk's exception (records.failed's 'could not record the failure') keeps its line only."""
    import logging

    class FullStream(io.StringIO):
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    log = logging.getLogger("labkit")
    full, shown = logging.StreamHandler(FullStream()), logging.StreamHandler(sys.stderr)
    before = log.handlers, log.propagate, log.level
    log.handlers, log.propagate = [full, shown], False  # only these two (earlier in-process runs leave Hydra's)
    log.setLevel(logging.INFO)
    try:
        with app.quiet_about_a_full_disk():
            log.warning("a line train.log cannot take")
            try:
                raise DiskFullError("full", errno=errno.ENOSPC)
            except DiskFullError:
                log.exception("could not record the failure")
        err = capsys.readouterr().err
        assert "Logging error" not in err and "Traceback" not in err, err
        assert "could not record the failure: the disk is full" in err
        log.warning("after the job")  # outside, logging's own report of a failing handler is back
        assert "Logging error" in capsys.readouterr().err
    finally:
        log.handlers, log.propagate = before[0], before[1]
        log.setLevel(before[2])


def test_staged_folders_on_a_full_disk(tmp_path, monkeypatch):
    import pathlib

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    (tmp_path / "evaluation").mkdir()
    monkeypatch.setattr(pathlib.Path, "mkdir", full)
    with pytest.raises(DiskFullError, match=f"writing test in {tmp_path / 'evaluation'} failed"):
        with files.staged_dir(tmp_path / "evaluation" / "test"):
            pass


# ----- a run --------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_run_whose_checkpoint_finds_the_disk_full_stops_with_one_paragraph_and_resumes(tmp_path, monkeypatch, capsys):
    disk = FullDisk(room=2)  # epoch 0: epoch000.ckpt and last.ckpt; epoch 1's first checkpoint finds the disk full
    monkeypatch.setattr(files, "os", disk)
    code = _train(tmp_path / "logs", tmp_path, "trainer.max_epochs=2")
    run = _check_stopped_and_resumable(tmp_path / "logs", code, capsys.readouterr())
    assert disk.refused == 1
    monkeypatch.setattr(files, "os", os)  # space freed
    _check_resumed(tmp_path / "logs", tmp_path, run, capsys)


def test_a_full_log_folder_before_the_job_starts_is_one_paragraph_too(tmp_path, monkeypatch, capsys):
    """Hydra writes its record of the job (<run>/.hydra/config.yaml) before labkit's code runs: a full disk there."""
    import hydra.core.utils

    def _save_config(cfg, filename, output_dir):  # Hydra's writer, on a full disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hydra.core.utils, "_save_config", _save_config)
    assert _train(tmp_path / "logs", tmp_path, "trainer.max_epochs=1") == 1
    line = _the_one_error(capsys.readouterr())
    (run,) = (tmp_path / "logs" / "runs").iterdir()
    assert line.startswith(f"error: no space left on device: writing config.yaml in {run / '.hydra'} failed"), line


def _mount(where: Path, size: str, remount: bool = False) -> bool:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return False
    options = f"remount,size={size}" if remount else f"size={size}"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, timeout=30)
    return r.returncode == 0


def _checkpoint_bytes(tmp: Path) -> int:
    """The size of this test's checkpoints (LeNet on digits, SGD with momentum), saved as labkit saves them."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = make_cfg([], tmp)
    task = instantiate(cfg.task, model=OmegaConf.to_container(cfg.model, resolve=True))
    weights = task.state_dict()
    buf = io.BytesIO()  # the weights and SGD's momentum buffers of the same shapes
    torch.save({"state_dict": weights, "momentum": {k: v.clone() for k, v in weights.items()}}, buf)
    return buf.tell()


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    size = _checkpoint_bytes(tmp_path / "probe")
    # room for epoch 0 (two checkpoints, the logs, the records) but not for a third checkpoint beside them
    if not _mount(disk, f"{(5 * size // 2) // 1024}k"):
        pytest.skip("cannot mount a tmpfs here (needs root on Linux): the injected full disk covers the same path")
    try:
        yield disk, size
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)


def test_a_log_folder_on_a_real_full_filesystem(small_disk, tmp_path, capsys):
    disk, _ = small_disk
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)  # nothing left for the run's folder
    try:
        with pytest.raises(OSError):
            while True:
                os.write(fd, b"\0" * 65536)
    finally:
        os.close(fd)
    assert _train(disk / "logs", tmp_path, "trainer.max_epochs=1") == 1
    line = _the_one_error(capsys.readouterr())
    assert line.startswith("error: no space left on device: writing ") and str(disk / "logs" / "runs") in line, line


@pytest.mark.slow
def test_a_run_on_a_real_full_filesystem(small_disk, tmp_path, capsys):
    disk, size = small_disk
    code = _train(disk / "logs", tmp_path, "trainer.max_epochs=2")
    run = _check_stopped_and_resumable(disk / "logs", code, capsys.readouterr())
    assert _mount(disk, f"{(6 * size) // 1024 + 1024}k", remount=True)  # space freed
    _check_resumed(disk / "logs", tmp_path, run, capsys)
