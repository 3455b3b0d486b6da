"""The notebook API: README's example, run exactly as written."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# README.md, section "From a notebook" (the same text, character for character)
NOTEBOOK_EXAMPLE = '''\
from labkit.api import compose, train, load_run

cfg = compose("model=lenet", "data=digits", "trainer.max_epochs=3")  # the same overrides as train.py's
run = train(cfg)                       # trains and tests; run.dir, run.metrics["test/acc"]
run = load_run(run.dir)                # later: any run directory (or .ckpt) -> run.task, run.data, run.config

x, y = next(iter(run.data.loader("test")))
accuracy = (run.task(run.data.transform(x, train=False)).argmax(1) == y).float().mean()
'''


@pytest.mark.slow
def test_the_readme_notebook_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LABKIT_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("LABKIT_DATA_DIR", str(tmp_path / "data"))
    scope: dict = {}
    exec(compile(NOTEBOOK_EXAMPLE, "README.md", "exec"), scope)
    run = scope["run"]
    assert run.dir.parent == tmp_path / "logs" / "runs" and run.dir.name.endswith("_classification-lenet-digits")
    assert run.metrics["status"] == "ok" and run.metrics["epochs"] == 3
    # the notebook's overrides are recorded like the command line's
    assert run.metrics["overrides"] == ["model=lenet", "data=digits", "trainer.max_epochs=3"]
    assert run.config.model._target_.endswith("LeNet") and run.config.trainer.max_epochs == 3
    assert not run.task.training and run.checkpoint.exists()
    # the reloaded network reproduces the run's own test accuracy on the first test batch's images
    assert float(scope["accuracy"]) > 0.5
    x, y = next(iter(run.data.loader("test")))
    assert len(x) == len(run.data.splits["test"])  # digits: one evaluation batch holds the whole test set
    assert float(scope["accuracy"]) == pytest.approx(run.metrics["test/acc"], abs=1e-6)


def test_compose_matches_the_command_line_and_errors_are_clear(tmp_path, monkeypatch):
    import labkit
    from labkit.cli.api import compose, load_run

    monkeypatch.setenv("LABKIT_LOG_DIR", str(tmp_path / "logs"))
    assert labkit.compose is compose and labkit.load_run is load_run
    cfg = compose("model=mlp", "task.optimizer.lr=0.5", seed=7, test=False)
    assert cfg.model._target_.endswith("MLP") and cfg.task.optimizer.lr == 0.5 and cfg.seed == 7
    assert cfg.test is False and "hydra" not in cfg
    assert Path(cfg.paths.output_dir).parent == tmp_path / "logs" / "runs"
    assert compose("model=mlp").paths.output_dir != compose("model=mlp").paths.output_dir  # a new run dir each
    assert compose(config="predict").topk == 3
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_run(tmp_path / "nope")


def test_readme_shows_the_notebook_example():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert NOTEBOOK_EXAMPLE in blocks, "README.md needs the notebook example of tests/test_api.py verbatim"
