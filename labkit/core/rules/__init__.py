"""The argument rules of labkit's own classes, in modules that import neither torch nor Lightning.

A class's ``check_args`` *is* one of these functions (``check_args = staticmethod(rules.tasks.classification)``):
its ``__init__`` runs it on ``locals()``, and the pre-flight (:mod:`labkit.run.signatures`) runs the same function on
the config before anything is built, without importing the class, so ``python train.py data.batch_size=0`` is refused
in well under a second. Each function checks the arguments of one class only (``a``: name -> value, with the
defaults of the class hierarchy filled in); a subclass's rules add to its base class's, base classes first.

One module per group of ``labkit/``: :mod:`labkit.core.rules.tasks`, :mod:`labkit.core.rules.data` (models have no
value rules yet, only their argument names, which :mod:`labkit.run.signatures` knows). They live in ``core`` because
``labkit.tasks`` and ``labkit.data`` import torch as soon as the package is imported.
"""
