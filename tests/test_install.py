"""A real package: a non-editable ``pip install .`` gives working commands (labkit-train, labkit-evaluate,
labkit-compare, ...) from an empty folder, with the config groups shipped inside the package and runs under
``./logs``; no source checkout is needed or used."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT


def _not_source(folder, names):
    """What a checkout holds beside its source: git's and builds' files, runs and datasets (at its top only)."""
    at_top = Path(folder) == ROOT
    return [n for n in names if n in (".git", "__pycache__") or n.endswith(".egg-info")
            or (at_top and (n in ("build", "logs", "data", "outputs", "multirun") or n.startswith(".ci-venv")))]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The package built from a copy of the checkout and installed (``pip install --target``, no dependencies: they
    are this interpreter's) into a folder that is the only labkit on the path."""
    tmp = tmp_path_factory.mktemp("install")
    shutil.copytree(ROOT, tmp / "src", ignore=_not_source)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    r = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "wheel"), str(tmp / "src")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = (tmp / "wheel").glob("labkit-*.whl")
    r = subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp / "site"), str(wheel)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    work = tmp / "work"
    (work / "labkit" / "labkit").mkdir(parents=True)  # a clone named labkit in the working folder
    shutil.copy(ROOT / "__init__.py", work / "labkit" / "__init__.py")  # with the repository's root file
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABKIT_", "HYDRA_"))}
    env["PYTHONPATH"] = str(tmp / "site")
    return tmp / "site", work, env


def _command(installed, name, *args):
    site, work, env = installed
    return subprocess.run([str(site / "bin" / name), *args], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_the_installed_package_is_the_one_used_with_its_configs(installed):
    site, work, env = installed
    r = subprocess.run([sys.executable, "-c", "import labkit, labkit.api, labkit.core.layout as layout; "
                        "print(labkit.__file__); print(layout.CONF_DIR)"], cwd=work, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    module, conf = r.stdout.split()
    assert Path(module) == site / "labkit" / "__init__.py"  # not the checkout, not the ./labkit clone
    assert Path(conf) == site / "labkit" / "conf" and (Path(conf) / "model" / "lenet.yaml").is_file()
    assert sorted(p.name for p in (site / "bin").iterdir() if p.name.startswith("labkit-")) == [
        "labkit-compare", "labkit-evaluate", "labkit-export", "labkit-predict", "labkit-train"]


@pytest.mark.slow
def test_installed_commands_train_evaluate_and_compare_from_an_empty_folder(installed):
    site, work, env = installed
    r = _command(installed, "labkit-train", "trainer.max_epochs=1", "trainer.accelerator=cpu")
    assert r.returncode == 0, r.stderr[-3000:]
    (run,) = (work / "logs" / "runs").iterdir()  # ./logs, as python train.py writes in a checkout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["test/acc"] > 0.3
    r = _command(installed, "labkit-evaluate", f"run={run}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (run / "evaluation" / "test" / "report.json").is_file()
    r = _command(installed, "labkit-compare", str(run), "--out", str(work / "compared"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert (work / "compared" / "comparison.md").is_file()
    r = _command(installed, "labkit-evaluate", "--help")
    assert r.returncode == 0 and "Evaluate a finished run" in r.stdout and "knn_k" in r.stdout, r.stderr[-3000:]
    r = _command(installed, "labkit-train", "data.batch_size=0")
    assert r.returncode == 1 and "data.batch_size=0 is invalid" in r.stderr
    assert sorted(p.name for p in work.iterdir()) == ["compared", "labkit", "logs"]  # nothing else written
