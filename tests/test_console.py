"""A quiet console: a normal train.py / evaluate.py / resume prints progress, results and the run directory only."""
import os
import re
import subprocess
import sys
import warnings

import pytest
from conftest import ROOT

# a warning, a deprecation, faiss's loader lines, alembic/Optuna set-up lines, raw colour codes, a traceback
NOISE = re.compile(r"warn|deprecat|AVX|alembic|Context impl|A new study created|\x1b\[[0-9;]*m|Traceback|"
                   r"Seed set to|GPU available: False|TPU available|exists and is not empty|FLOPs", re.I)


def _run(script, args, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for key in ("PYTHONWARNINGS", "NO_COLOR", "TTY_COMPATIBLE", "TQDM_DISABLE", "LABKIT_PLAIN", "LABKIT_LOG_DIR"):
        env.pop(key, None)
    r = subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _noise(text: str) -> list[str]:
    lines = [ln for chunk in text.splitlines() for ln in chunk.split("\r")]
    return [ln for ln in lines if NOISE.search(ln)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console")
    r = _run("train.py", ["trainer.max_epochs=1", f"paths.log_dir={tmp / 'logs'}"], tmp)
    (run,) = (tmp / "logs" / "runs").iterdir()
    return tmp, run, r


@pytest.mark.slow
def test_train_console_is_quiet(trained):
    _, run, r = trained
    assert _noise(r.stderr) == [] and _noise(r.stdout) == []
    assert f"run directory: {run}" in r.stdout and "test/acc" in r.stdout  # what the user came for
    assert "Params" in r.stdout and "LeNet" in r.stdout  # the model summary is still there, without FLOPs


@pytest.mark.slow
def test_evaluate_and_resume_consoles_are_quiet(trained):
    tmp, run, _ = trained
    r = _run("evaluate.py", [f"run={run}"], tmp)
    assert _noise(r.stderr) == [] and _noise(r.stdout) == []
    assert "accuracy" in r.stdout
    r = _run("train.py", [f"resume={run}", "trainer.max_epochs=2", f"paths.log_dir={tmp / 'logs'}"],
             tmp)  # checkpoints/ is not empty
    assert _noise(r.stderr) == [] and _noise(r.stdout) == []


@pytest.mark.slow
def test_faiss_reports_are_quiet(cfg_factory, tmp_path):
    """An embedding run's evaluation loads faiss (whose loader logs AVX512/AVX2 attempts)."""
    from labkit.run.lifecycle import execute

    cfg = cfg_factory("model=embedding_net", "task=siamese", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                      "trainer.limit_val_batches=1", "logger=none")
    execute(cfg)
    r = _run("evaluate.py", [f"run={cfg.paths.output_dir}", "tsne_samples=60"], tmp_path)  # a fast t-SNE
    assert _noise(r.stderr) == [] and _noise(r.stdout) == []
    assert "retrieval" in r.stdout


def test_filters_are_specific():
    """Only the named messages are filtered: other warnings of the same categories still show."""
    import logging

    import labkit.core.console

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        with labkit.core.console.settings():  # its filters on top of 'default', as an entry point applies them
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning)
            warnings.warn("something else is deprecated", FutureWarning)
            warnings.warn("Checkpoint directory /x exists and is not empty.", UserWarning)
            warnings.warn("a real problem", UserWarning)
            assert logging.getLogger("faiss.loader").isEnabledFor(logging.ERROR)
            assert not logging.getLogger("faiss.loader").isEnabledFor(logging.INFO)
    assert [str(w.message) for w in caught] == ["something else is deprecated", "a real problem"]
    f = labkit.core.console._filter
    rec = logging.LogRecord("pytorch_lightning.utilities.rank_zero", logging.INFO, "", 0, "GPU available: True (cuda), "
                            "used: True", None, None)
    assert f.filter(rec)  # a GPU machine still says it uses the GPU
    rec.msg = "GPU available: False, used: False"
    assert not f.filter(rec)


def test_progress_bars_only_for_people_watching(monkeypatch, capsys):
    """labkit's own bars (evaluation passes, caches) are drawn on a terminal, not into a log file or a pipe (nor when
    stdout alone goes to a file: the training progress shares the decision, labkit.core.console.plain)."""
    import io

    from labkit.core import console as quiet

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(quiet, "_forced", None)
    for key in ("LABKIT_PLAIN", "TERM"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    for out, stream, shown in ((Terminal(), io.StringIO(), False), (Terminal(), Terminal(), True),
                               (io.StringIO(), Terminal(), False)):
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(sys, "stderr", stream)
        assert quiet.interactive() is shown
        assert list(quiet.progress(range(3), desc="embedding train", file=stream)) == [0, 1, 2]
        assert ("embedding train" in stream.getvalue()) is shown
