"""Bad input at the command line: a table of cases run through the real entry points (train.py, evaluate.py).

Each case: the command's arguments, the exit status, a phrase the message must contain, files that must not exist
afterwards, and never a "Traceback". Most cases fail in labkit.cli.app's pre-flight, before Hydra creates anything, and
run in-process through the scripts' own ``cli(argv)`` (the same code path as the command line, without paying for a
new interpreter each time); a few run in a subprocess, where what is being tested is the process itself.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, make_cfg, sampled, write_cifar, write_mnist

NOTHING = ("logs",)  # the pre-flight failed: no run directory, no .hydra/, no train.log
NO_CHECKPOINT = ("logs/runs/*/checkpoints/*.ckpt",)


@dataclass(frozen=True)
class Case:
    script: str  # train or evaluate
    args: tuple[str, ...]
    phrase: str
    absent: tuple[str, ...] = NOTHING
    code: int = 1
    data: str = ""  # files to write first: mnist, mnist_bad_magic, mnist_truncated, cifar_not_pickle, file, run
    reads_data: bool = False  # refused by the data module's own checks (it is built: torch is imported)

    def __str__(self):
        return " ".join(self.args)[:60]


def T(*args, phrase, **kw) -> Case:
    return Case("train", args, phrase, **kw)


def E(*args, phrase, **kw) -> Case:
    return Case("evaluate", args, phrase, **kw)


IN_PROCESS = [
    # ----- keys that do not exist: the same 'did you mean' with and without + -----
    T("+trainer.max_epoch=3", phrase="Did you mean 'trainer.max_epochs'?"),
    T("task.optimizer.momentm=0.9", phrase="Did you mean 'task.optimizer.momentum'?"),
    T("trainr.max_epochs=3", phrase="Did you mean 'trainer'?"),
    T("modle=lenet", phrase="Did you mean 'model'?"),
    T("data=image_folder", "data.root=/nowhere", "data.num_classes=3", "data.on_corrupt=ignore",
      phrase="data.on_corrupt='ignore' is invalid"),
    T("data=caltech101", "data.resize=100", phrase="data.resize=100 is invalid: it must be an integer >= data.image_size=224"),
    T("data=egocart", "data.similar_distance=0", phrase="data.similar_distance=0.0 is invalid"),
    T("model.init_from=/no/run", phrase="init_from is a top-level key, not part of 'model': write init_from=/no/run"),
    T("init_from=/no/run", phrase="init_from=/no/run does not exist"),
    T("resume=@file", "trainer.max_epochs=3", phrase="is not inside a labkit run directory", data="file"),
    T("data=minst", phrase="Did you mean 'data=mnist'?"),
    T("task/optimizer=sgdd", phrase="Did you mean 'task/optimizer=sgd'?"),
    T("+data.colour_jitter=1", phrase="Did you mean 'data.color_jitter'?"),
    # a logger's schema rules, in the pre-flight (not when the logger is built inside the run's folder)
    T("logger=mlflow", "logger.mlflow.connect_timeout_s=-1", phrase="logger.mlflow.connect_timeout_s=-1.0 is invalid"),
    T("logger=wandb", "logger.wandb.log_model=some", phrase="logger.wandb.log_model='some' is invalid"),
    T("callbacks=early_stopping", "callbacks.early_stopping.mode=maximum", phrase="Did you mean 'max'?"),
    # a hold-out larger than the training set, from the files' header (or the embedded set's size): before any folder
    T("data=mnist", "data.val_size=60", phrase="data.val_size=60 is invalid: it must be smaller than the 60 training "
      "images", data="mnist", reads_data=True),
    T("data.val_size=1500", phrase="smaller than the 1438 training images", reads_data=True),
    T("paths.nonsense=1", phrase="+paths.nonsense=1"),
    T("+trainer.max_epochs=3", phrase="drop the + and write trainer.max_epochs=3"),
    # ----- impossible values, one message shape -----
    T("data.batch_size=0", phrase="data.batch_size=0 is invalid: it must be a positive integer"),
    T("data.batch_size=abc", phrase="data.batch_size='abc' is invalid"),
    T("data.eval_batch_size=-1", phrase="data.eval_batch_size=-1 is invalid"),
    T("data.num_workers=-1", phrase="data.num_workers=-1 is invalid: it must be an integer >= 0"),
    T("data.hflip=1.5", phrase="data.hflip=1.5 is invalid: it must be a number in [0, 1]"),
    T("data.mean=[0.1,0.2]", phrase="data.mean has 2 values"),
    T("data.std=[0.0]", phrase="data.std=[0.0] is invalid"),
    T("data.mean=0.5", phrase="data.mean=0.5 is invalid: it must be a list in brackets"),
    T("data.mean=[0.5,0.5]", phrase="one number per channel"),
    T("data.val_size=2.0", phrase="data.val_size=2.0 is invalid: it must be a fraction in [0, 1) or a count"),
    T("data.val_size=-3", phrase="data.val_size=-3 is invalid"),
    T("task.optimizer.lr=0", phrase="task.optimizer.lr=0.0 is invalid: it must be a number > 0"),
    T("task.optimizer.momentum=1.5", phrase="task.optimizer.momentum=1.5 is invalid: it must be a number in [0, 1]"),
    T("task.optimizer.weight_decay=-0.1", phrase="task.optimizer.weight_decay=-0.1 is invalid"),
    T("task/optimizer=adam", "task.optimizer.betas=[0.9,1.5]", phrase="task.optimizer.betas[1]=1.5 is invalid"),
    T("task.label_smoothing=1.0", phrase="task.label_smoothing=1.0 is invalid: it must be a number in [0, 1)"),
    T("task.mixup_alpha=-0.2", phrase="task.mixup_alpha=-0.2 is invalid"),
    T("task.cutmix_alpha=abc", phrase="task.cutmix_alpha='abc' is invalid"),
    T("task.mix_stop_epoch=-1", phrase="task.mix_stop_epoch=-1 is invalid"),
    T("data=cifar10", "data.pad=-2", phrase="data.pad=-2 is invalid: it must be an integer >= 0"),
    T("data=cifar10", "data.erasing=1.5", phrase="data.erasing=1.5 is invalid: it must be a number in [0, 1]"),
    T("task.scheduler_interval=hour", phrase="task.scheduler_interval='hour' is invalid"),
    T("task.freeze=all", phrase="task.freeze='all' is invalid"),
    T("task.unfreeze_at_epoch=2", phrase="task.unfreeze_at_epoch=2 needs task.freeze=backbone"),
    T("task=triplet", "model=embedding_net", "task.miner=semihard", phrase="Did you mean 'task/miner=semi_hard'?"),
    T("task=triplet", "model=embedding_net", "task.miner=semi_hard", phrase="Did you mean 'task/miner=semi_hard'?"),
    T("task=siamese", "model=embedding_net", "task/miner=batch_hard",
      phrase="task.miner='pytorch_metric_learning.miners.BatchHardMiner' is invalid: it must be null with "
             "task.loss=labkit.tasks.losses.ContrastiveLoss"),
    T("task=triplet", "model=embedding_net", "task/distance=cosine",
      phrase="task.distance='pytorch_metric_learning.distances.CosineSimilarity' is invalid"),
    T("task=siamese", "model=embedding_net", "task.margin=-1", phrase="task.margin=-1.0 is invalid"),
    T("task=denoising_autoencoder", "model=conv_autoencoder", "task.noise_factor=-1",
      phrase="task.noise_factor=-1.0 is invalid"),
    T("task=sparse_autoencoder", "model=conv_autoencoder", "task.reduction=max", phrase="task.reduction='max'"),
    T("seed=-3", phrase="seed=-3 is invalid"),
    T("trainer.max_epochs=-5", phrase="trainer.max_epochs=-5 is invalid: it must be an integer >= -1"),
    T("trainer.log_every_n_steps=0", phrase="trainer.log_every_n_steps=0 is invalid"),
    T("trainer.limit_train_batches=1.5", phrase="trainer.limit_train_batches=1.5 is invalid"),
    T("trainer.accelerator=CPU", phrase="trainer.accelerator='CPU' is invalid: it must be one of auto, cpu, gpu"),
    T("trainer.devices=0", phrase="trainer.devices=0 is invalid: it must be auto, a number of devices"),
    T("trainer.num_nodes=0", phrase="trainer.num_nodes=0 is invalid"),
    # ----- what the trainer asks of the machine is checked where it trains, before the run directory is claimed;
    # Lightning's own refusals are one paragraph with its reason -----
    T("trainer.accelerator=tpu", phrase="trainer.accelerator=tpu needs torch_xla", absent=NO_CHECKPOINT),
    T("trainer.strategy=foo", phrase="Lightning refused the trainer settings (trainer.accelerator=cpu, "
      "trainer.devices=1, trainer.num_nodes=1, trainer.strategy=foo", absent=NO_CHECKPOINT),
    # ----- a monitor must be a metric the task logs -----
    T("callbacks=early_stopping", "callbacks.early_stopping.monitor=val/accc", phrase="Did you mean 'val/acc'?"),
    T("callbacks.model_checkpoint.monitor=val/accuracy", phrase="ClassificationTask logs"),
    T("task=autoencoder", "model=conv_autoencoder", "callbacks=early_stopping",
      "callbacks.early_stopping.monitor=val/acc", phrase="AutoencoderTask logs: train/loss"),
    T("optimized_metric=val/acc_best", phrase="optimized_metric='val/acc_best' is invalid"),
    T("data=image_folder", "data.num_classes=3", phrase="data.root is not set: data=image_folder"),
    T("trainer.max_epochs=${nope}", phrase="Interpolation key 'nope' not found"),
    # ----- paths and resume -----
    T("resume=true", phrase="no run to resume"),
    T("resume=/no/such/run", phrase="does not exist"),
    # a key a resume may not change is refused before the run's checkpoint is read (no torch needed)
    T("resume=@run", "model=lenet_v2", phrase="resume=@run cannot change 'model'", data="run"),
    T("resume=@run", "task.optimizer.lr=0.5", phrase="cannot change 'task.optimizer.lr'", data="run"),
    T("paths.log_dir=@file/x", phrase="is a file, not a folder", data="file"),
    # ----- what needs the data is checked at setup, before the first step -----
    T("data.val_size=100000", phrase="data.val_size=100000 is invalid: it must be smaller than the 1438 training",
      absent=NO_CHECKPOINT),
    T("model.num_classes=7", phrase="10 classes", absent=NO_CHECKPOINT),
    # ----- evaluate.py -----
    E("run=/no/such/run", phrase="does not exist"),
    E("run=@run", "reports=[foo]", phrase="'foo' is not one"),
    E("run=@run", "reports=[retreival]", phrase="Did you mean 'retrieval'?"),
    E("run=@run", "split=bogus", phrase="split='bogus' is invalid"),
    E("run=@run", "ckpt=last", phrase="no last checkpoint"),
    E("run=@run", "knn_k=0", phrase="knn_k=0 is invalid"),
    E("run=@data", phrase="is not a labkit run directory: it has no config.yaml"),
]

# a corrupt data file is found when the data is read (labkit.core.safe_load.CorruptFileError names the file)
IN_PROCESS += [
    pytest.param(T("data=mnist", "data.val_size=10", phrase="is not an IDX file", absent=NO_CHECKPOINT,
                   data="mnist_bad_magic"),
                 id="mnist-bad-magic"),
    pytest.param(T("data=mnist", "data.val_size=10", phrase="is truncated", absent=NO_CHECKPOINT,
                   data="mnist_truncated"),
                 id="mnist-truncated"),
    pytest.param(T("data=cifar10", phrase="data_batch_1", absent=NO_CHECKPOINT, data="cifar_not_pickle"),
                 id="cifar-not-pickle"),
]

SUBPROCESS = [
    T("trainer.max_epoch=3", phrase="Did you mean 'trainer.max_epochs'?"),
    T("model=lenett", phrase="Did you mean 'model=lenet'?"),
    T("trainer.max_epochs=[", phrase="cannot read the override 'trainer.max_epochs=['"),
    T("data=image_folder", phrase="data.num_classes and data.root are not set: data=image_folder"),
    T("-m", "trainer.max_epoch=3", phrase="Did you mean 'trainer.max_epochs'?"),
    T("task.label_smoothing=2", phrase="task.label_smoothing=2.0 is invalid"),
    E(phrase="run is not set: python evaluate.py needs it", absent=()),
]

_SCRIPTS: dict = {}


def script(name: str):
    """train.py / evaluate.py as modules (their ``cli(argv)`` is what ``__main__`` runs)."""
    if name not in _SCRIPTS:
        spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _SCRIPTS[name] = mod
    return _SCRIPTS[name]


def prepare(case: Case, tmp: Path) -> list[str]:
    """The case's full argument list (temporary folders for logs and data, CPU, no logger) after writing its files."""
    data = tmp / "data"
    if case.data.startswith("mnist"):
        raw = write_mnist(data, n_train=60, n_test=20)
        f = raw / "train-images-idx3-ubyte"
        if case.data != "mnist":
            f.write_bytes(b"\x12\x34" + f.read_bytes()[2:] if case.data == "mnist_bad_magic" else f.read_bytes()[:500])
    elif case.data == "cifar_not_pickle":
        d = write_cifar(data, 10)
        (d / "data_batch_1").write_text("this is not a pickle\n")
    elif case.data == "file":
        (tmp / "file").write_text("")
    run_dir = tmp / "run"
    if case.data == "run":  # a run that saved a checkpoint, to resume
        write_run(run_dir, tmp)
    args = [a.replace("@file", str(tmp / "file")).replace("@run", str(run_dir)).replace("@data", str(data))
            for a in case.args]
    if case.script == "evaluate":
        if any("@run" in a for a in case.args):  # a finished run's files, enough for the pre-flight
            from labkit.run import directory as runs

            runs.save_config(make_cfg([], tmp / "made"), run_dir)
            (run_dir / "checkpoints").mkdir()
            (run_dir / "checkpoints" / "epoch000.ckpt").write_bytes(b"")
        data.mkdir(exist_ok=True)
        return args
    return [f"paths.log_dir={tmp / 'logs'}", f"paths.data_dir={data}", "trainer.accelerator=cpu",
            "trainer.devices=1", "trainer.enable_progress_bar=false", "logger=none", *args]


def write_run(run_dir: Path, tmp: Path) -> None:
    """A run directory as train.py leaves it after one epoch: config.yaml and checkpoints/last.ckpt."""
    import torch

    from labkit.run import directory as runs

    runs.save_config(make_cfg([], tmp / "made"), run_dir)
    (run_dir / "checkpoints").mkdir()
    torch.save({"epoch": 0, "global_step": 10, "state_dict": {}}, run_dir / "checkpoints" / "last.ckpt")


def check(case: Case, tmp: Path, code, out: str) -> None:
    assert code == case.code, out
    assert case.phrase.replace("@run", str(tmp / "run")) in out, out
    assert "Traceback" not in out, out
    assert out.count("error: ") == 1, out  # one paragraph
    for pattern in case.absent:
        assert not list(tmp.glob(pattern)), f"{pattern} exists after {case}"


@pytest.mark.parametrize("case", sampled(IN_PROCESS, keep=range(0, len(IN_PROCESS), 6)), ids=str)  # 1 in 6 fast
def test_in_process(case: Case, tmp_path, capsys):
    args = prepare(case, tmp_path)
    try:
        script(case.script).cli(args)
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    check(case, tmp_path, code, out.out + out.err)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.mark.parametrize("case", sampled(SUBPROCESS, keep=range(0, len(SUBPROCESS), 3)), ids=str)
def test_subprocess(case: Case, tmp_path):
    args = prepare(case, tmp_path)
    p = subprocess.run([sys.executable, f"{case.script}.py", *args], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=300)
    check(case, tmp_path, p.returncode, p.stdout + p.stderr)


@pytest.mark.parametrize("how", ["--debug", "HYDRA_FULL_ERROR=1"])
def test_debug_shows_the_traceback(how, tmp_path, monkeypatch):
    """--debug (or HYDRA_FULL_ERROR=1) lets the error through with its traceback, and --debug is not an override."""
    from labkit.core.errors import ConfigError

    args = prepare(T("data.batch_size=0", phrase=""), tmp_path)
    if how == "--debug":
        monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
        args.append("--debug")
    else:
        monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError, match="data.batch_size=0"):
        script("train").cli(args)
    assert not (tmp_path / "logs").exists()
    assert os.environ.get("HYDRA_FULL_ERROR") == (None if how == "--debug" else "1")  # nothing leaks to later calls


@pytest.mark.slow
def test_help_flags_still_work():
    """Hydra's own flags go through: train.py --help lists the groups, evaluate.py --help lists only its options
    with their comments, --cfg prints the composed config without a pre-flight."""
    run = lambda *a: subprocess.run([sys.executable, *a], cwd=ROOT, env=_env(), capture_output=True, text=True,
                                    timeout=120)
    train_help = run("train.py", "--help")
    assert train_help.returncode == 0 and "model: " in train_help.stdout and "lenet" in train_help.stdout
    ev = run("evaluate.py", "--help")
    assert ev.returncode == 0, ev.stderr
    assert "knn_k: 1" in ev.stdout and "# k of the kNN classifier" in ev.stdout and "--debug" in ev.stdout
    assert "model:" not in ev.stdout and "Configuration groups" not in ev.stdout and "hydra:" not in ev.stdout
    cfg = run("train.py", "--cfg", "job", "trainer.max_epochs=2")
    assert cfg.returncode == 0 and "max_epochs: 2" in cfg.stdout


def test_the_table_is_large_enough():
    assert len(IN_PROCESS) + len(SUBPROCESS) >= 40
