"""The notebook API, ``from labkit.api import compose, train, load_run``: this name is :mod:`labkit.cli.api` itself
(the same module object, so ``labkit.api.train is labkit.cli.api.train``); see there."""
import sys

from labkit.cli import api as _api

sys.modules[__name__] = _api
