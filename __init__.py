"""The root of labkit's repository; the package is the ``labkit/`` folder inside it.

This file is here for one case: a clone of the repository named ``labkit`` in the working folder (``git clone ...
labkit`` and a notebook next to it). The working folder comes first on ``sys.path``, so ``import labkit`` finds the
clone before the installed package (an editable install's finder comes after every folder on the path). Imported that
way, this file hands the import to the installed labkit; when there is none, it says so and what to do instead of a
bare ``No module named 'labkit.api'``. Imported under any other name it does nothing. ``tests/test_clone.py``.
"""
import importlib.machinery
import importlib.util
import os
import sys


def _installed_spec(name: str, clone: str):
    """The spec of the package ``name`` from anywhere but ``clone``: another folder on sys.path (a regular install),
    or a finder after them (an editable install); None when there is none."""
    here = os.path.dirname(clone)

    def usable(spec) -> bool:  # a package of its own (not a namespace folder), not this file again
        return spec is not None and spec.origin not in (None, "namespace") and \
            os.path.dirname(os.path.realpath(spec.origin)) != os.path.realpath(clone)

    spec = importlib.machinery.PathFinder.find_spec(name, [p for p in sys.path if os.path.abspath(p or os.curdir) != here])
    if usable(spec):
        return spec
    for finder in sys.meta_path:
        if finder is importlib.machinery.PathFinder or not hasattr(finder, "find_spec"):
            continue
        try:
            spec = finder.find_spec(name, None)
        except Exception:  # noqa: BLE001  (a finder that cannot answer for this name: the next one)
            continue
        if usable(spec):
            return spec
    return None


def _hand_over(name: str) -> None:
    clone = os.path.dirname(os.path.abspath(__file__))
    spec = _installed_spec(name, clone)
    if spec is None:
        raise ImportError(
            f"'import {name}' found {clone}, a copy of labkit's repository (the folder with train.py and the package "
            f"folder {name}/ inside), not the package, and no installed labkit to use instead. Install it "
            f"(pip install -e {clone}), or run Python from inside that folder (cd {clone}), or from a folder that has "
            f"no '{name}' folder in it.", name=name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the import statement returns what sys.modules holds when this file is done
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


if __name__ == "labkit":
    _hand_over(__name__)
