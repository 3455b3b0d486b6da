"""The one packaging setting pyproject.toml cannot say: the checkout's ``conf/`` (Hydra's config groups) is shipped
inside the package, as ``labkit/conf/`` (labkit.core.layout finds it there after ``pip install .``), while it stays at
the top of the checkout for ``python train.py``. Everything else is in pyproject.toml."""
from setuptools import find_namespace_packages, setup

# hydra_plugins: a namespace package Hydra scans for plugins (labkit's Optuna sweeper, its schemas)
packages = find_namespace_packages(include=["labkit", "labkit.*", "hydra_plugins", "hydra_plugins.*"])
setup(packages=[*packages, "labkit.conf"], package_dir={"labkit.conf": "conf"})
