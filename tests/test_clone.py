"""A clone of labkit's repository named ``labkit`` in the working folder (issue 35 item 5): ``import labkit`` finds it
first (the working folder leads sys.path); its root ``__init__.py`` hands the import to the installed package, or
says clearly that there is none. (The non-editable install's side: tests/test_install.py.)"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

from conftest import ROOT


def _clone(tmp_path, name="labkit"):
    clone = tmp_path / name
    (clone / "labkit").mkdir(parents=True)  # the package folder of the clone (empty here: never imported)
    shutil.copy(ROOT / "__init__.py", clone / "__init__.py")
    (clone / "train.py").write_text("")
    return clone


def _python(cwd, code, *flags, env=None):
    env = {k: v for k, v in (env or os.environ).items() if not k.startswith(("LABKIT_", "HYDRA_"))}
    return subprocess.run([sys.executable, *flags, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_clone_in_the_working_folder_hands_the_import_to_the_installed_labkit(tmp_path):
    _clone(tmp_path)
    # this interpreter's labkit: the editable install of the checkout (README's command), or the checkout on PYTHONPATH
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [os.environ.get("PYTHONPATH", "")] if p)}
    r = _python(tmp_path, "import labkit, labkit.api; from labkit.api import compose; print(labkit.__file__)", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert os.path.realpath(r.stdout.strip()) == os.path.realpath(ROOT / "labkit" / "__init__.py")


def test_a_clone_and_no_installed_labkit_is_one_clear_error(tmp_path):
    clone = _clone(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = _python(tmp_path, "from labkit.api import compose", "-S", env=env)  # -S: no site-packages, no install
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: 'import labkit' found " + str(clone)), last
    assert "a copy of labkit's repository" in last and f"pip install -e {clone}" in last and f"cd {clone}" in last


def test_under_any_other_name_the_root_file_does_nothing(tmp_path):
    _clone(tmp_path, name="experiments")
    r = _python(tmp_path, "import experiments, sys; print(experiments.__file__); print('labkit' in sys.modules)")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == [str(tmp_path / "experiments" / "__init__.py"), "False"]
