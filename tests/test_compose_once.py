"""Issue 30 item 3: ``python train.py`` composes its config once (the pre-flight is a Hydra callback on that config),
resolves a resume's target once, and reaches ``trainer.fit`` through at most 5 labkit frames."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import pytorch_lightning as pl
from hydra._internal.config_loader_impl import ConfigLoaderImpl  # (counted, not used: the test's own probe)

from labkit.cli.train import cli
from labkit.run import directory

LABKIT = str(Path(__file__).resolve().parents[1] / "labkit")


def _args(tmp: Path, *args: str) -> list[str]:
    return [f"paths.log_dir={tmp / 'logs'}", f"paths.data_dir={tmp / 'data'}", "trainer.accelerator=cpu",
            "trainer.devices=1", "trainer.enable_progress_bar=false", "logger=none", "trainer.max_epochs=1",
            "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", *args]


@pytest.fixture
def counted(monkeypatch):
    seen = {"compose": 0, "all": 0, "resume_target": 0, "frames": None}
    load = ConfigLoaderImpl.load_configuration

    def counting_load(self, *a, **k):
        seen["all"] += 1
        # Hydra composes once more to read hydra.mode (its get_mode): not a second composition of labkit's
        if not any(f.function == "get_mode" for f in inspect.stack()[1:6]):
            seen["compose"] += 1
        return load(self, *a, **k)

    from labkit.cli import app

    def no_second_composition(*a, **k):
        raise AssertionError("labkit composed the config itself (the pre-flight is Hydra's composition)")

    monkeypatch.setattr(app, "_compose", no_second_composition)  # (used only to explain a bad override)

    monkeypatch.setattr(ConfigLoaderImpl, "load_configuration", counting_load)
    target = directory.resume_target

    def counting_target(*a, **k):
        seen["resume_target"] += 1
        return target(*a, **k)

    monkeypatch.setattr(directory, "resume_target", counting_target)
    fit = pl.Trainer.fit

    def recording_fit(self, *a, **k):
        seen["frames"] = [f"{Path(f.filename).name}:{f.function}" for f in inspect.stack()[1:]
                          if f.filename.startswith(LABKIT)]
        return fit(self, *a, **k)

    monkeypatch.setattr(pl.Trainer, "fit", recording_fit)
    return seen


def test_one_composition_and_five_frames_to_fit(tmp_path, counted):
    cli(_args(tmp_path))
    assert counted["compose"] == 1, "the command line's config was composed more than once"
    assert counted["all"] == 1, "Hydra composed it again to read hydra.mode"
    assert counted["frames"] is not None and len(counted["frames"]) <= 5, counted["frames"]
    # cli -> app.run -> (Hydra) -> train.main -> lifecycle.train -> lifecycle.fit -> trainer.fit
    assert counted["frames"][-1].endswith(":cli") and counted["frames"][0].endswith(":fit")


@pytest.mark.slow
def test_a_resume_target_is_resolved_once(tmp_path, counted):
    cli(_args(tmp_path))
    counted["compose"] = counted["resume_target"] = 0
    cli(_args(tmp_path, "resume=true", "trainer.max_epochs=2"))
    assert counted["compose"] == 1
    assert counted["resume_target"] == 1, "resume= was resolved again (hydra.run.dir should take the plan's)"
    runs = sorted((tmp_path / "logs" / "runs").iterdir())
    assert len(runs) == 1  # continued in its own folder


def test_a_refusal_from_the_preflight_leaves_nothing(tmp_path, counted, capsys):
    with pytest.raises(SystemExit) as e:
        cli(_args(tmp_path, "data.batch_size=0"))
    assert e.value.code == 1
    assert "data.batch_size=0 is invalid" in capsys.readouterr().err
    assert counted["compose"] == 1 and not (tmp_path / "logs").exists()
    # nor does Hydra compose it a second time to read hydra.mode (labkit.cli.mode answers it from the command line)
    assert counted["all"] == 1
