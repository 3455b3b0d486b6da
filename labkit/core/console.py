"""A quiet console: the dependencies' own noise is filtered at its source, by exact message or logger.

Importing this module changes nothing: the entry points (train.py, evaluate.py, predict.py, export.py, their console
scripts, and the :mod:`labkit.api` calls) apply the settings below for as long as they run (:func:`settings`) and put
everything back afterwards. Every filter names one known message (or one library's set-up logger); real warnings and
errors still reach the console:

- torch's ``isinstance(treespec, LeafSpec)`` FutureWarning, raised from inside Lightning at the first training
  step, which split the progress bar;
- faiss's "Could not load library with AVX512 support" / "Loading faiss with AVX2 support" INFO lines (its loader's
  logger only: its errors stay);
- MLflow's database set-up lines, SQLAlchemy's ``noload`` deprecation raised by MLflow's own store, and Lightning's
  "Experiment with name labkit not found. Creating it." on a store's first run;
- the ONNX exporter's optimizer notes ("Removed 7 unused nodes", "Skipping constant folding...") at INFO;
- Optuna's "A new study created" and alembic's "setup plugin ..." / "Context impl SQLiteImpl" set-up INFO lines,
  and the raw colour codes of Optuna's coloured log handler when the console is not a terminal (``NO_COLOR``, the
  convention colorlog follows);
- Lightning's start-up banner lines that repeat what labkit already says ("Seed set to", "GPU available: False",
  "TPU available", "Restoring states"/"Loaded model weights" for the test of the best checkpoint, the "max_epochs
  reached" note) and its "Checkpoint directory exists and is not empty" warning, which a resumed or a tested run
  always triggers by design (labkit writes into its own run directory);
- the model summary's FLOPs column, always 0 because tasks have no example input:
  :class:`labkit.callbacks.ModelSummary` drops it;
- labkit's own progress bars (:func:`progress`) when the output is plain (:func:`plain`): a log file or a pipe got a
  wall of carriage returns and cursor codes from every evaluation pass.

:func:`plain` is the one place that decides whether output is for a file (a log under ``nohup``, ``screen`` or a
scheduler such as SLURM, a pipe) or for a person at a terminal: labkit's bars, the training progress
(:mod:`labkit.callbacks.progress`), W&B's console output and colour codes all ask it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings

# ----- warnings: exact messages only ---------------------------------------------------------------------
_WARNINGS = [
    # torch >= 2.10 deprecates LeafSpec; pytorch_lightning.utilities._pytree still builds one each step
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    # MLflow's SQLite store still uses SQLAlchemy's noload (logger=mlflow)
    (r"The ``noload`` loader strategy is deprecated", DeprecationWarning),
    # rank_zero_warn goes through warnings.warn: Lightning's checkpoint-directory warning (a resumed or tested run
    # writes into its own run directory by design)
    (r"Checkpoint directory .* exists and is not empty", Warning),
]

# ----- library set-up INFO lines: those loggers only, at WARNING (their warnings and errors still show) ---------
# (optuna.storages: every storage's logger below it, each saying "A new study created in ... with name")
_SET_UP_LOGGERS = ("faiss.loader", "alembic.runtime.migration", "alembic.runtime.plugins", "optuna.storages",
                   "onnxscript", "onnx_ir", "mlflow.store.db.utils")  # onnx*: the ONNX exporter's optimizer notes

# ----- plain output: files, pipes and schedulers' logs get no bars and no escape codes ------------------------------
PLAIN_ENV = "LABKIT_PLAIN"
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
_forced: bool | None = None  # the run's own setting (callbacks.progress_bar.plain), see force_plain


def _is_terminal(stream) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def _flag(value) -> bool | None:
    """True/False for a yes/no setting (a bool or text such as "1", "false"), None for unset or "auto"."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return True if text in _TRUE else False if text in _FALSE else None


def plain(setting: bool | str | None = None) -> bool:
    """True when output goes to a file, a pipe or a scheduler's log rather than to a person at a terminal: no
    progress bars, carriage returns or escape codes then, plain lines instead.

    The first that is set decides: ``setting`` (a caller's own), the run's ``callbacks.progress_bar.plain``
    (:func:`force_plain`), the environment's ``LABKIT_PLAIN`` (1/0); otherwise output is plain unless both stdout
    and stderr are terminals (Lightning's bar writes to one, labkit's bars to the other) and ``TERM`` is not
    ``dumb``. A notebook is never plain: it draws bars as widgets."""
    for value in (setting, _forced, os.environ.get(PLAIN_ENV)):
        decided = _flag(value)
        if decided is not None:
            return decided
    if "ipykernel" in sys.modules:
        return False
    return not (_is_terminal(sys.stdout) and _is_terminal(sys.stderr)) or os.environ.get("TERM") == "dumb"


def force_plain(setting: bool | str | None) -> bool:
    """Make ``setting`` (true, false, or null = decide by the terminal) this process's choice, for every later
    :func:`plain` question; returns the decision. Called once per run by the progress bar callback."""
    global _forced
    _forced = _flag(setting)
    decided = plain()
    if decided:
        _no_colour()
    return decided


def _no_colour() -> None:
    # colorlog (Optuna's handler) writes escape codes even into files and pipes unless NO_COLOR is set; rich (model
    # summary, test table) draws no styles when TTY_COMPATIBLE=0, even on a terminal with LABKIT_PLAIN=1; tqdm bars
    # that other code draws without asking (Lightning's lr finder, dataset downloads) are off with TQDM_DISABLE=1 when
    # it is set before tqdm is imported (labkit's and Lightning's own bars pass `disable` themselves)
    os.environ.setdefault("NO_COLOR", "1")
    os.environ.setdefault("TTY_COMPATIBLE", "0")
    os.environ.setdefault("TQDM_DISABLE", "1")


class _DropMessages(logging.Filter):
    """Drop records whose message matches one of ``patterns`` (anchored at the start)."""

    def __init__(self, patterns: list[str]):
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a malformed record is not ours to hide
            return True
        return not self.pattern.match(msg)


_LIGHTNING_NOISE = [
    r"GPU available: False",                       # nothing to say on a CPU machine (True still shows)
    r"TPU available: ", r"HPU available: ", r"IPU available: ",
    r"`Trainer\.fit` stopped: `max_epochs=\d+` reached",   # the run simply finished
    r"Restoring states from the checkpoint path at ", r"Loaded model weights from the checkpoint at ",
    r"Restored all states from the checkpoint at ",        # labkit logs "resuming <run> from <ckpt>" itself
    r"Trainer already configured with model summary callbacks",  # labkit's own summary (below)
    r".*litlogger",                                        # Lightning's advertising tip
]
_filter = _DropMessages(_LIGHTNING_NOISE)
_seed_filter = _DropMessages([r"(\[rank: \d+\] )?Seed set to \d+"])  # labkit records the seed in metrics.json
# logger name -> the filter it gets
_LOGGER_FILTERS = [
    *((name, _filter) for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero",
                                   "lightning_fabric.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")),
    # Lightning restoring its own checkpoints (the lr finder's temporary one, the best one for the test)
    ("pytorch_lightning.trainer.connectors.checkpoint_connector",
     _DropMessages([r"`weights_only` was not set, defaulting to `False`"])),
    # logger=mlflow's first run in a store: the experiment is created, as intended
    ("pytorch_lightning.loggers.mlflow", _DropMessages([r"Experiment with name .* not found"])),
    *((name, _seed_filter) for name in ("lightning_fabric.utilities.seed", "lightning.fabric.utilities.seed")),
]
_COLOUR_ENV = ("NO_COLOR", "TTY_COMPATIBLE", "TQDM_DISABLE")


# ----- applied by the entry points, for as long as they run ------------------------------------------------------
@contextlib.contextmanager
def settings():
    """labkit's console settings while a command or a :mod:`labkit.api` call runs: the warning filters, the set-up
    loggers at WARNING, the Lightning log filters and, when output is plain (:func:`plain`), no colour codes or
    stray tqdm bars (``NO_COLOR``, ``TTY_COMPATIBLE``, ``TQDM_DISABLE``). Everything is put back as it was when the
    block ends, so a notebook or a program that calls labkit keeps its own warnings, logging and environment
    (importing labkit changes none of them). Nested blocks are fine."""
    global _forced
    env, forced = {key: os.environ.get(key) for key in _COLOUR_ENV}, _forced
    levels = {name: logging.getLogger(name).level for name in _SET_UP_LOGGERS}
    added = [(name, f) for name, f in _LOGGER_FILTERS if f not in logging.getLogger(name).filters]
    with warnings.catch_warnings():  # restores warnings.filters (and showwarning) on the way out
        for message, category in _WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        for name in _SET_UP_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        for name, f in added:
            logging.getLogger(name).addFilter(f)
        if plain():
            _no_colour()
        try:
            yield
        finally:
            for name, f in added:
                logging.getLogger(name).removeFilter(f)
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
            _forced = forced  # a run's callbacks.progress_bar.plain ends with the run
            for key, value in env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def interactive() -> bool:
    """True when a person watches the output live (a terminal or a notebook): the opposite of :func:`plain`."""
    return not plain()


def progress(iterable, desc: str, **kwargs):
    """A tqdm progress bar over ``iterable`` for long work (evaluation passes, caches), shown only when
    :func:`interactive`: logs and pipes get no bar."""
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    return tqdm(iterable, desc=desc, disable=not interactive(), **kwargs)


def __getattr__(name: str):
    import labkit._compat

    return labkit._compat.moved_attribute(__name__, name)  # ModelSummary (labkit.callbacks.model_summary now)
