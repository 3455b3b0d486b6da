"""Bad input fails early with a message naming the bad value and what is valid."""
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError

from labkit.core.errors import ConfigError, IncompatibleError
from labkit.run.lifecycle import execute


def test_unknown_model_lists_the_options(cfg_factory):
    with pytest.raises(ConfigCompositionException) as e:
        cfg_factory("model=nope")
    assert "model/nope" in str(e.value) and "lenet" in str(e.value)


def test_misspelt_trainer_key_is_rejected(cfg_factory):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)) as e:
        cfg_factory("trainer.max_epoch=3")
    assert "max_epoch" in str(e.value)


def test_misspelt_appended_key_gets_a_suggestion(cfg_factory, tmp_path):
    cfg = cfg_factory("+trainer.max_epoch=3")
    with pytest.raises(ConfigError) as e:
        execute(cfg)
    assert "trainer.max_epoch" in str(e.value) and "max_epochs" in str(e.value)
    assert not (tmp_path / "run").exists()  # nothing written


@pytest.mark.parametrize("override,needle", [
    ("data.batch_size=0", "data.batch_size=0"),
    ("data.batch_size=-4", "data.batch_size=-4"),
    ("task.optimizer.lr=-0.1", "task.optimizer.lr=-0.1"),
    ("task.optimizer.momentum=-1", "task.optimizer.momentum=-1"),
    ("seed=-3", "seed=-3"),
    ("trainer.max_epochs=-5", "trainer.max_epochs=-5"),
    ("data.num_workers=-1", "data.num_workers=-1"),
])
def test_impossible_values(override, needle, cfg_factory):
    with pytest.raises(ConfigError) as e:
        execute(cfg_factory(override))
    assert needle in str(e.value)


def test_model_data_mismatch_fails_before_training(cfg_factory):
    with pytest.raises(IncompatibleError) as e:
        execute(cfg_factory("model=lenet", "data.image_size=12"))
    assert "lenet" in str(e.value) and "1x12x12" in str(e.value)
    with pytest.raises(IncompatibleError, match="10 classes"):
        execute(cfg_factory("model.num_classes=7"))


def test_unwritable_output_folder(cfg_factory, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    cfg = cfg_factory("trainer=debug")
    from omegaconf import open_dict
    with open_dict(cfg):
        cfg.paths.output_dir = str(ro / "run")
    import os
    if os.geteuid() == 0:  # root ignores permissions; use a path below a file instead
        (tmp_path / "file").write_text("")
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "file" / "run")
    with pytest.raises((PermissionError, FileExistsError, NotADirectoryError, OSError)) as e:
        execute(cfg)
    assert "run" in str(e.value)


@pytest.mark.parametrize("override,needle", [
    ("data.hflip=1.5", "data.hflip=1.5"),
    ("data.std=[0.0]", "data.std"),
    ("data.mean=[0.1,0.2]", "data.mean has 2 values"),
    ("task.scheduler_interval=hour", "task.scheduler_interval='hour'"),
    ("+data.colour_jitter=1", "data.colour_jitter"),
    ("+model.widht=3", "model.widht"),
    ("data.val_size=100000", "hold-out size 100000"),
])
def test_more_bad_values(override, needle, cfg_factory, tmp_path):
    with pytest.raises(ConfigError) as e:
        execute(cfg_factory(override, "trainer=debug", "logger=none"))
    assert needle in str(e.value)
    assert not list((tmp_path / "run").glob("checkpoints/*.ckpt"))


def test_resume_with_nothing_to_resume(cfg_factory):
    with pytest.raises(FileNotFoundError, match="no run to resume"):
        execute(cfg_factory("resume=true"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        execute(cfg_factory("resume=/no/such/run"))


def test_evaluate_bad_run_and_split(cfg_factory):
    from labkit.cli.evaluate import evaluate
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate(cfg_factory("run=/no/such/run", name="evaluate"))
    with pytest.raises(ConfigError, match="split='bogus'"):
        evaluate(cfg_factory("run=/no/such/run", "split=bogus", name="evaluate"))


# ----- labkit.core.checks: one vocabulary, one message shape, each check declared once -----------------------------
def test_checks_vocabulary_message_shape():
    from labkit.core import checks

    cases = [
        (lambda: checks.positive_int("data.batch_size", 0),
         "data.batch_size=0 is invalid: it must be a positive integer"),
        (lambda: checks.positive_int("data.batch_size", True), "data.batch_size=True is invalid"),
        (lambda: checks.non_negative("task.margin", -1), "task.margin=-1 is invalid: it must be a number >= 0"),
        (lambda: checks.fraction("data.hflip", 1.5), "data.hflip=1.5 is invalid: it must be a number in [0, 1]"),
        (lambda: checks.in_range("task.label_smoothing", 1, 0, 1, hi_open=True),
         "task.label_smoothing=1 is invalid: it must be a number in [0, 1)"),
        (lambda: checks.count_or_fraction("data.val_size", 2.0),
         "data.val_size=2.0 is invalid: it must be a fraction in [0, 1) or a count (an integer >= 0)"),
        (lambda: checks.one_of("task.miner", "semihard", (None, "batch_hard", "semi_hard")),
         "task.miner='semihard' is invalid: it must be one of null, batch_hard, semi_hard. Did you mean 'semi_hard'?"),
    ]
    for call, text in cases:
        with pytest.raises(ConfigError) as e:
            call()
        assert str(e.value).startswith(text), str(e.value)
    assert checks.positive_int("data.batch_size", None, optional=True) is None
    assert checks.count_or_fraction("data.val_size", 0) == 0 and checks.fraction("p", 1) == 1


@pytest.mark.parametrize("override,build", [
    ("task.label_smoothing=2", lambda: __import__("labkit.tasks", fromlist=["x"]).ClassificationTask(
        model={"_target_": "labkit.models.LeNet"}, label_smoothing=2.0)),  # (the schema's float field: 2.0)
    ("task.optimizer.momentum=1.5", lambda: __import__("labkit.tasks", fromlist=["x"]).ClassificationTask(
        model={"_target_": "labkit.models.LeNet"}, optimizer={"_target_": "torch.optim.SGD", "momentum": 1.5})),
    ("data.batch_size=0", lambda: __import__("labkit.data", fromlist=["x"]).DigitsDataModule(batch_size=0)),
    ("data.val_size=2.0", lambda: __import__("labkit.data", fromlist=["x"]).DigitsDataModule(val_size=2.0)),
])
def test_config_and_constructor_share_one_check(override, build, cfg_factory):
    """The constructor's check_args is what validate runs on the config: the same message, before anything is built."""
    from labkit.run.validate import validate

    with pytest.raises(ConfigError) as at_config:
        validate(cfg_factory(override))
    with pytest.raises(ConfigError) as in_python:
        build()
    assert str(at_config.value) == str(in_python.value)
    assert override.split("=")[0] in str(at_config.value)


def test_every_task_declares_its_logged_metrics():
    import labkit.tasks as T

    for cls in (T.ClassificationTask, T.AutoencoderTask, T.DenoisingAutoencoderTask, T.SparseAutoencoderTask,
                T.SiameseTask, T.TripletTask):
        assert cls.monitor[0] in cls.logged_metrics, cls
        assert "train/loss" in cls.logged_metrics and "test/loss" in cls.logged_metrics


# ----- what the trainer asks of the machine (labkit.run.validate.check_machine, run where the training runs) -----
def _gpus(monkeypatch, n: int) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize("gpus,trainer,needle", [
    (0, {"accelerator": "gpu", "devices": 1}, "trainer.accelerator=gpu, but torch sees no CUDA GPU"),
    (0, {"accelerator": "cuda", "devices": "auto"}, "hydra.launcher.gpus_per_node=1"),
    (2, {"accelerator": "gpu", "devices": 4}, "trainer.devices=4 asks for 4 GPUs, but"),
    (2, {"accelerator": "cuda", "devices": "0,1,2"}, "asks for 3 GPUs"),
    (0, {"accelerator": "auto", "devices": -1}, "has no GPU, so the run is on the CPU"),
    (0, {"accelerator": "cpu", "devices": [0, 1]}, "trainer.accelerator=cpu, where devices is a number of processes"),
    (0, {"accelerator": "mps", "devices": 1}, "no Apple GPU (MPS)"),
])
def test_a_trainer_the_machine_cannot_run_is_refused_naming_what_it_has(gpus, trainer, needle, monkeypatch):
    from omegaconf import OmegaConf

    from labkit.run.validate import check_machine

    _gpus(monkeypatch, gpus)
    with pytest.raises(ConfigError) as e:
        check_machine(OmegaConf.create(trainer))
    assert needle in str(e.value)


@pytest.mark.parametrize("gpus,trainer", [
    (0, {"accelerator": "auto", "devices": "auto"}), (0, {"accelerator": "cpu", "devices": 2}),
    (0, {"accelerator": "auto", "devices": "2"}), (2, {"accelerator": "gpu", "devices": 2}),
    (2, {"accelerator": "gpu", "devices": -1}), (2, {"accelerator": "cuda", "devices": [0, 1]}),
    (1, {"accelerator": "auto", "devices": -1}),
])
def test_a_trainer_the_machine_can_run_passes(gpus, trainer, monkeypatch):
    from omegaconf import OmegaConf

    from labkit.run.validate import check_machine

    _gpus(monkeypatch, gpus)
    check_machine(OmegaConf.create(trainer))


def test_a_gpu_run_on_a_cpu_machine_is_refused_before_the_run_directory_is_claimed(cfg_factory, monkeypatch,
                                                                                     tmp_path):
    _gpus(monkeypatch, 0)
    cfg = cfg_factory("trainer.accelerator=gpu")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        execute(cfg)
    run = tmp_path / "run"
    assert not (run / "config.yaml").exists() and not list(run.glob("checkpoints/*.ckpt"))


def test_a_trainer_setting_lightning_refuses_is_one_config_error_recorded_as_such(cfg_factory, tmp_path):
    from labkit.core.files import read_json

    cfg = cfg_factory("trainer.strategy=nonsense")
    with pytest.raises(ConfigError) as e:
        execute(cfg)
    assert "Lightning refused the trainer settings" in str(e.value) and "strategy='nonsense'" in str(e.value)
    recorded = read_json(tmp_path / "run" / "metrics.json")
    assert recorded["status"] == "failed" and "Lightning refused the trainer settings" in recorded["error"]
