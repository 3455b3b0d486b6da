"""File safety: no code runs from a data file, corrupt files are named, nothing half-written survives a kill,
results get the umask's permissions, and dataset folders are never written to."""
from __future__ import annotations

import gzip
import os
import pickle
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, write_cifar, write_mnist

from labkit.callbacks import AtomicCheckpointIO
from labkit.core import files
from labkit.core.errors import IncompatibleError, LabkitError
from labkit.core.safe_load import (
    CorruptFileError,
    UnsafeCheckpointError,
    UnsafeFileError,
    load_checkpoint,
    safe_unpickle,
)
from labkit.data.folder import ImageFolderDataModule, dataset_cache_dir
from labkit.data.vision import CIFAR10DataModule, CIFAR100DataModule, MNISTDataModule
from labkit.run import directory as runs


# ----- hostile pickles ---------------------------------------------------------------------------------
class _System:
    """Unpickling calls os.system("touch <marker>")."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Open:
    """Unpickling calls builtins.open(<marker>, "w"): creates the marker without any import."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _cifar_batch(n=10, label_key="labels", **extra):
    return {"data": np.zeros((n, 3072), np.uint8), label_key: list(range(n)), "batch_label": "x", **extra}


@pytest.mark.parametrize("payload", [_System, _Open])
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar_batch_with_a_code_payload_is_refused_and_runs_nothing(tmp_path, payload, protocol):
    d = write_cifar(tmp_path / "data", 10)
    marker = tmp_path / "pwned"
    with open(d / "data_batch_3", "wb") as f:
        pickle.dump(_cifar_batch(filenames=payload(marker)), f, protocol=protocol)
    dm = CIFAR10DataModule(data_dir=str(tmp_path / "data"), channels=3)
    with pytest.raises(UnsafeFileError) as e:
        dm.setup()
    msg = str(e.value)
    assert isinstance(e.value, LabkitError)
    assert str(d / "data_batch_3") in msg and "cannot be loaded safely" in msg and "nothing was executed" in msg
    assert ("system" in msg) if payload is _System else ("open" in msg)
    assert not marker.exists()


def test_cifar_meta_with_a_payload_is_refused(tmp_path):
    d = write_cifar(tmp_path / "data", 100)
    marker = tmp_path / "pwned"
    with open(d / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)], "x": _System(marker)}, f)
    with pytest.raises(UnsafeFileError, match="meta"):
        CIFAR100DataModule(data_dir=str(tmp_path / "data"), num_classes=100, channels=3).setup()
    assert not marker.exists()


def test_restricted_unpickler_reads_plain_data_and_numpy(tmp_path):
    obj = {"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": [1, 2, 3], "name": "b", "raw": b"\x00\xff",
           "scalar": np.int64(7), "f": np.float32(0.5), "t": (1, 2.5, None, True), "s": {1, 2}, "c": 1 + 2j}
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        p = tmp_path / f"p{protocol}"
        p.write_bytes(pickle.dumps(obj, protocol=protocol))
        back = safe_unpickle(p)
        assert np.array_equal(back["data"], obj["data"]) and back["data"].dtype == np.uint8
        assert {k: v for k, v in back.items() if k != "data"} == {k: v for k, v in obj.items() if k != "data"}
    # any other global is refused, even a harmless-looking one
    p = tmp_path / "cls"
    p.write_bytes(pickle.dumps({"x": Path("/")}))
    with pytest.raises(UnsafeFileError, match="pathlib"):
        safe_unpickle(p)


@pytest.mark.parametrize("content, why", [(b"", "empty file"), (b"hello, this is a text file\n", ""),
                                          (pickle.dumps(_cifar_batch())[:200], "")])
def test_cifar_batch_that_is_not_a_pickle_names_the_file(tmp_path, content, why):
    d = write_cifar(tmp_path / "data", 10)
    (d / "test_batch").write_bytes(content)
    with pytest.raises(CorruptFileError) as e:
        CIFAR10DataModule(data_dir=str(tmp_path / "data"), channels=3).setup()
    assert str(d / "test_batch") in str(e.value) and "re-download" in str(e.value) and why in str(e.value)
    assert isinstance(e.value, LabkitError)


def test_cifar_pickle_of_the_wrong_shape_names_the_file(tmp_path):
    d = write_cifar(tmp_path / "data", 10)
    with open(d / "data_batch_1", "wb") as f:
        pickle.dump({"data": np.zeros((4, 100), np.uint8), "labels": [0, 1, 2, 3]}, f)
    with pytest.raises(CorruptFileError, match="data_batch_1"):
        CIFAR10DataModule(data_dir=str(tmp_path / "data"), channels=3).setup()
    with open(d / "data_batch_1", "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(CorruptFileError, match="data_batch_1.*not a cifar10 batch"):
        CIFAR10DataModule(data_dir=str(tmp_path / "data"), channels=3).setup()


# ----- corrupt IDX files -------------------------------------------------------------------------------
def _corrupt(raw: Path, kind: str) -> Path:
    f = raw / "train-images-idx3-ubyte"
    data = f.read_bytes()
    if kind == "truncated":
        f.write_bytes(data[: len(data) // 2])
    elif kind == "magic":
        f.write_bytes(b"\x00\x00\x09\x03" + data[4:])
    elif kind == "header":
        f.write_bytes(data[:6])
    elif kind == "empty":
        f.write_bytes(b"")
    elif kind == "gzip":
        gz = raw / "train-images-idx3-ubyte.gz"
        gz.write_bytes(gzip.compress(data)[:300])
        f.unlink()
        return gz
    return f


@pytest.mark.parametrize("kind, phrase", [("truncated", "truncated"), ("magic", "not an IDX file"),
                                          ("header", "truncated"), ("empty", "not an IDX file"),
                                          ("gzip", "gzip")])
def test_corrupt_idx_file_is_a_labkit_error_naming_the_file(tmp_path, kind, phrase):
    bad = _corrupt(write_mnist(tmp_path / "data"), kind)
    with pytest.raises(CorruptFileError) as e:
        MNISTDataModule(data_dir=str(tmp_path / "data")).setup()
    assert isinstance(e.value, LabkitError) and isinstance(e.value, ValueError)
    assert str(bad) in str(e.value) and phrase in str(e.value)


def _cli(args, tmp_path, **env):
    env = dict(os.environ, LABKIT_DATA_DIR=str(tmp_path / "data"), LABKIT_LOG_DIR=str(tmp_path / "logs"),
               PYTHONPATH=str(ROOT), **env)
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args, "trainer.accelerator=cpu", "logger=none",
                           "trainer.enable_progress_bar=false"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_entry_point_refuses_a_hostile_cifar_batch_in_one_paragraph(tmp_path):
    d = write_cifar(tmp_path / "data", 10)
    marker = tmp_path / "pwned"
    with open(d / "data_batch_2", "wb") as f:
        pickle.dump(_cifar_batch(filenames=_System(marker)), f)
    r = _cli(["data=cifar10", "model=lenet_color", "trainer.max_epochs=1"], tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "Traceback" not in out and "nothing was executed" in out and str(d / "data_batch_2") in out
    assert not marker.exists()


@pytest.mark.slow
def test_entry_point_names_a_truncated_idx_file_without_traceback(tmp_path):
    bad = _corrupt(write_mnist(tmp_path / "data"), "truncated")
    r = _cli(["data=mnist", "data.val_size=20", "trainer.max_epochs=1"], tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out and str(bad) in out and "truncated" in out


# ----- checkpoints that are not checkpoints ------------------------------------------------------------
def test_a_file_that_is_not_a_checkpoint_is_called_so(tmp_path):
    from PIL import Image

    png = tmp_path / "figure.png"
    Image.new("RGB", (8, 8)).save(png)
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    for f in (ROOT / "README.md", png, empty):
        with pytest.raises(UnsafeCheckpointError) as e:
            load_checkpoint(f)
        msg = str(e.value)
        assert f"{f} is not a checkpoint (a PyTorch .ckpt/.pt file)" in msg
        assert "pickled Python objects" not in msg and "trust" not in msg
    # a genuine pickle with code keeps the "pickled objects" diagnosis; nothing runs
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "x": _System(marker)}, evil)
    with pytest.raises(UnsafeCheckpointError, match="pickled Python objects.*nothing was executed"):
        load_checkpoint(evil)
    assert not marker.exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.ckpt")


# ----- temporaries of killed writers -------------------------------------------------------------------
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _killed_while_writing(code: str, target: Path) -> None:
    """Run ``code`` in a fresh python whose ``os.replace`` SIGKILLs it: the write stops after the temporary is
    complete but before it is renamed (the worst moment of an atomic write)."""
    script = ("import os, signal, sys\n"
              "os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
              "target = sys.argv[1]\n" + code)
    r = subprocess.run([sys.executable, "-c", script, str(target)], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]


def _temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if files.is_temporary(p))


@pytest.mark.slow
def test_checkpoint_temporary_of_a_killed_save_is_removed_by_the_next_save(tmp_path):
    ckdir = tmp_path / "run" / "checkpoints"
    ckdir.mkdir(parents=True)
    old = {"state_dict": {"w": torch.zeros(3)}, "epoch": 0}
    torch.save(old, ckdir / "epoch000.ckpt")  # a result of an earlier run, written outside this process
    _killed_while_writing("import torch\nfrom labkit.callbacks import AtomicCheckpointIO\n"
                          "AtomicCheckpointIO().save_checkpoint({'state_dict': {'w': torch.ones(300000)}}, target)\n",
                          ckdir / "epoch000.ckpt")
    left = _temporaries(ckdir)
    assert len(left) == 1 and left[0].name.startswith(".epoch000.ckpt.") and left[0].name.endswith(".labkit-tmp")
    assert left[0].stat().st_size > 1_000_000  # the complete new checkpoint, never renamed
    assert not left[0].name.endswith(".ckpt")  # so it is never taken for a checkpoint
    assert runs.find_checkpoint(tmp_path / "run") == ckdir / "epoch000.ckpt"
    assert torch.equal(load_checkpoint(ckdir / "epoch000.ckpt")["state_dict"]["w"], torch.zeros(3))  # intact

    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, ckdir / "last.ckpt")
    assert _temporaries(ckdir) == []
    assert sorted(p.name for p in ckdir.iterdir()) == ["epoch000.ckpt", "last.ckpt"]
    assert torch.equal(load_checkpoint(ckdir / "epoch000.ckpt")["state_dict"]["w"], torch.zeros(3))
    assert torch.equal(load_checkpoint(ckdir / "last.ckpt")["state_dict"]["w"], torch.ones(2))


def test_figure_temporary_of_a_killed_save_is_removed_by_the_next_one(tmp_path):
    out = tmp_path / "evaluation"
    _killed_while_writing("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
                          "from labkit.core.files import save_figure\nsave_figure(plt.figure(), target)\n",
                          out / "confusion_matrix.png")
    assert len(_temporaries(out)) == 1 and not (out / "confusion_matrix.png").exists()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files.save_figure(plt.figure(), out / "embedding.png")
    assert [p.name for p in out.iterdir()] == ["embedding.png"]
    assert (out / "embedding.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cleaner_removes_only_stale_temporaries(tmp_path):
    host = files._HOST
    other = "abcdef" if host != "abcdef" else "123456"
    dead, alive = _dead_pid(), os.getppid()
    old = [f".epoch002.ckpt.{alive}-{other}-0a1b2c3d.labkit-tmp",  # another machine's, unchanged for hours
           ".config.yaml.ab_cd123.tmp", ".confusion_matrix.png.tmp.png"]  # older labkit versions', hours old
    stale = [f".metrics.json.{dead}-{host}-0a1b2c3d.labkit-tmp", f".epoch001.ckpt.{dead}-{host}-ffff0000.labkit-tmp",
             *old]
    keep = [f".metrics.json.{alive}-{host}-0a1b2c3d.labkit-tmp",  # a live writer of this machine
            f".epoch003.ckpt.{dead}-{other}-0a1b2c3d.labkit-tmp",  # another machine's, recent: maybe still writing
            ".fresh.png.tmp.png",  # recent, writer unknown
            "metrics.json", "epoch001.ckpt", "notes.tmp", ".hidden", "report.labkit-tmp", ".a.b.tmp"]
    for name in stale + keep:
        (tmp_path / name).write_text("x")
    hours_ago = time.time() - 2 * files.STALE_AFTER_S
    for name in old + ["epoch001.ckpt", "notes.tmp", ".a.b.tmp"]:
        os.utime(tmp_path / name, (hours_ago, hours_ago))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / stale[0]).write_text("x")
    removed = files.clean_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + ["sub"])
    assert (tmp_path / "sub" / stale[0]).exists()  # not recursive unless asked
    files.clean_stale_temporaries(tmp_path, recursive=True)
    assert not (tmp_path / "sub" / stale[0]).exists()


def test_first_write_into_a_folder_cleans_it(tmp_path):
    name = f".metrics.json.{_dead_pid()}-{files._HOST}-12345678.labkit-tmp"
    (tmp_path / name).write_text("half")
    files.write_json(tmp_path / "metrics.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    assert files.read_json(tmp_path / "metrics.json") == {"a": 1}


# ----- permissions ------------------------------------------------------------------------------------
@pytest.fixture
def umask():
    before = os.umask(0o022)
    try:
        yield lambda m: os.umask(m)
    finally:
        os.umask(before)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.slow
def test_results_get_the_permissions_of_the_umask(cfg_factory, tmp_path, umask):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from labkit.run.lifecycle import execute

    cfg = cfg_factory("trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                      "trainer.limit_test_batches=1", "logger=none")
    m = execute(cfg)
    run = Path(cfg.paths.output_dir)
    ckpts = sorted((run / "checkpoints").glob("*.ckpt"))
    fig = files.save_figure(plt.figure(), run / "evaluation" / "confusion_matrix.png")
    assert m["status"] == "ok" and ckpts
    for f in [run / "config.yaml", run / "metrics.json", fig, *ckpts]:
        assert _mode(f) == 0o644, (f, oct(_mode(f)))
    umask(0o077)  # a private umask is respected as well
    files.write_json(tmp_path / "private.json", {})
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(1)}, tmp_path / "private.ckpt")
    assert _mode(tmp_path / "private.json") == _mode(tmp_path / "private.ckpt") == 0o600
    umask(0o002)
    files.atomic_write_text(tmp_path / "group.yaml", "a: 1\n")
    assert _mode(tmp_path / "group.yaml") == 0o664


# ----- dataset folders are read-only for labkit --------------------------------------------------------
def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def _chmod_tree(root: Path, writable: bool) -> None:
    for p in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        p.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _image_tree(root: Path, classes=("a", "b", "c"), per_class=6, empty=()) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        if name in empty:
            continue
        for i in range(per_class):
            x = rng.integers(0, 60, size=(20, 24, 3), dtype=np.uint8)
            x[..., c % 3] += 150
            Image.fromarray(x).save(root / name / f"{i}.jpg")
    return root


def test_folder_dataset_writes_nothing_into_a_read_only_dataset_folder(tmp_path, cfg_factory):
    from hydra.utils import instantiate

    root = _image_tree(tmp_path / "flowers")
    before = _tree(root)
    _chmod_tree(root, writable=False)
    try:
        cfg = cfg_factory("data=image_folder", f"data.root={root}", "data.num_classes=3", "data.resize=24",
                          "data.image_size=16", "data.num_workers=0", "data.cache_resized=true")
        dm = instantiate(cfg.data)
        dm.setup()
        x, _ = next(iter(dm.train_dataloader()))
        assert x.shape[1:] == (3, 16, 16)
        work = dataset_cache_dir(cfg.paths.cache_dir, root)
        assert dm.split_dir == work / "splits_seed0" and work.parent == tmp_path / "logs" / "cache"
        assert (work / "splits_seed0" / "test.csv").is_file() and any((work / "cache_24").rglob("*.png"))
        # a second run reuses the same split files
        again = instantiate(cfg.data)
        again.setup()
        assert again.samples == dm.samples and again.split_dir == dm.split_dir
    finally:
        _chmod_tree(root, writable=True)
    assert _tree(root) == before  # nothing created or modified in the dataset folder


def test_a_split_saved_by_an_older_labkit_in_the_dataset_folder_is_reused(tmp_path):
    root = _image_tree(tmp_path / "flowers")
    old = ImageFolderDataModule(root=str(root), num_classes=3, resize=24, image_size=16, work_dir=str(root / ".labkit"))
    old.setup()
    dm = ImageFolderDataModule(root=str(root), num_classes=3, resize=24, image_size=16,
                               cache_root=str(tmp_path / "cache"))
    dm.setup()
    assert dm.split_dir == root / ".labkit" / "splits_seed0" and dm.samples == old.samples


# ----- empty class folders ----------------------------------------------------------------------------
def test_an_empty_class_folder_stops_setup_naming_it(tmp_path):
    root = _image_tree(tmp_path / "flowers", classes=("a", "b", "c"), empty=("b",))
    (root / "b" / "readme.txt").write_text("not an image")
    dm = ImageFolderDataModule(root=str(root), num_classes=3, resize=24, image_size=16,
                               work_dir=str(tmp_path / "cache"))
    with pytest.raises(IncompatibleError) as e:
        dm.setup()
    msg = str(e.value)
    assert str(root / "b") in msg and "data.num_classes=3" in msg and "data.exclude=[b]" in msg
    assert "data.num_classes=2" in msg
    assert not (tmp_path / "cache").exists()  # checked before anything is written
    # following the advice works
    ok = ImageFolderDataModule(root=str(root), num_classes=2, exclude=["b"], resize=24, image_size=16,
                               work_dir=str(tmp_path / "cache"))
    ok.setup()
    assert ok.classes == ["a", "c"]


def test_a_class_folder_of_only_unreadable_images_stops_setup(tmp_path):
    root = _image_tree(tmp_path / "flowers", classes=("a", "b", "c"), empty=("c",))
    (root / "c" / "0.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    dm = ImageFolderDataModule(root=str(root), num_classes=3, resize=24, image_size=16,
                               work_dir=str(tmp_path / "cache"))
    with pytest.raises(IncompatibleError, match=r"hold no readable images: .*flowers/c\b"):
        dm.setup()


def test_caltech101_empty_category_keeps_background_excluded_in_the_advice(tmp_path):
    from labkit.data.folder import Caltech101DataModule

    _image_tree(tmp_path / "data" / "caltech101" / "101_ObjectCategories",
                classes=("BACKGROUND_Google", "ant", "bee"), empty=("bee",))
    dm = Caltech101DataModule(data_dir=str(tmp_path / "data"), num_classes=2, resize=24, image_size=16,
                              work_dir=str(tmp_path / "cache"))
    with pytest.raises(IncompatibleError, match=r"data.exclude=\[BACKGROUND_Google,bee\]"):
        dm.setup()


# ----- other files labkit reads back --------------------------------------------------------------------
def test_an_edited_split_file_is_named(tmp_path):
    root = _image_tree(tmp_path / "flowers")
    kw = dict(root=str(root), num_classes=3, resize=24, image_size=16, work_dir=str(tmp_path / "work"))
    dm = ImageFolderDataModule(**kw)
    dm.setup()
    test_csv = dm.split_dir / "test.csv"
    test_csv.write_text("path,label\na/0.jpg,7\n")
    with pytest.raises(CorruptFileError, match=rf"{test_csv} is corrupt: label '7'.*delete"):
        ImageFolderDataModule(**kw).setup()
    test_csv.write_bytes(b"\x00\xff\xfe garbage")
    with pytest.raises(CorruptFileError, match=str(test_csv)):
        ImageFolderDataModule(**kw).setup()


def test_a_binary_egocart_label_file_is_named(tmp_path):
    from labkit.data.egocart import read_labels

    f = tmp_path / "train_set.txt"
    f.write_bytes(b"\xff\xd8\xff\xe0 a jpeg, not labels")
    with pytest.raises(CorruptFileError, match=rf"{f} is not a text file of labels"):
        read_labels(f)


def test_labels_outside_the_dataset_range_name_the_file(tmp_path):
    raw = write_mnist(tmp_path / "data")
    from labkit.data.vision import write_idx

    labels = np.zeros(100, np.uint8)
    labels[5] = 200
    write_idx(raw / "t10k-labels-idx1-ubyte", labels)
    with pytest.raises(CorruptFileError, match=r"t10k-labels-idx1-ubyte is corrupt: it holds the label 200"):
        MNISTDataModule(data_dir=str(tmp_path / "data")).setup()
    d = write_cifar(tmp_path / "data", 10)
    with open(d / "test_batch", "wb") as f:
        pickle.dump(_cifar_batch(n=4, labels=[0, 1, 2, 10]), f)
    with pytest.raises(CorruptFileError, match=r"test_batch is corrupt: its labels go from 0 to 10"):
        CIFAR10DataModule(data_dir=str(tmp_path / "data"), channels=3).setup()


def test_cached_pretrained_weights_carrying_code_are_refused(tmp_path, monkeypatch):
    import torchvision.models as tvm

    from labkit.models import zoo

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    marker = tmp_path / "pwned"
    bad = cache / zoo.weights_file(tvm.SqueezeNet1_0_Weights.IMAGENET1K_V1)
    torch.save({"features.0.weight": torch.zeros(1), "x": _Open(marker)}, bad)
    with pytest.raises(UnsafeCheckpointError, match=rf"{bad} cannot be loaded safely.*nothing was executed"):
        zoo.squeezenet1_0(num_classes=5, pretrained=True)
    assert not marker.exists()
