"""labkit's Lightning callbacks (like ``pytorch_lightning.callbacks``), one module per idea; a config names them as
``_target_: labkit.callbacks.<Class>``.

- :mod:`~labkit.callbacks.checkpoint`: :class:`RunCheckpoint` (checkpoints that survive moved run folders, inside
  epochs and where a scheduler stops the run) and the trainer's atomic checkpoint writes (:class:`AtomicCheckpointIO`)
- :mod:`~labkit.callbacks.clock`: :class:`RunClock`, a run's wall time over all its sessions
- :mod:`~labkit.callbacks.finetuning`: :class:`UnfreezeBackbone`, transfer learning's freeze/unfreeze (``task.freeze``)
- :mod:`~labkit.callbacks.guards`: :class:`FiniteLossGuard`, a clean stop on a NaN/inf loss
- :mod:`~labkit.callbacks.history`: :class:`History`, ``history.csv``, ``learning_curves.png`` and a line per epoch
- :mod:`~labkit.callbacks.model_summary`: :class:`ModelSummary` without the all-zero FLOPs column
- :mod:`~labkit.callbacks.progress`: :func:`progress_bar`, Lightning's bar on a terminal, plain lines in a log file
- :mod:`~labkit.callbacks.run_summary`: :class:`RunSummary`, the config and final figures to every logger
- :mod:`~labkit.callbacks.search`: :class:`TrialReporter`, a search's trial reported to its Optuna study
- :mod:`~labkit.callbacks.seed`: :class:`EpochSeed`, bit-for-bit resumes
- :mod:`~labkit.callbacks.signals`: :class:`SignalsAsSigterm`, SLURM's SIGUSR1 stops a run like SIGTERM

Old paths (``labkit.run.callbacks.RunCheckpoint``, ``labkit.tracking.history.History``, ...) are answered by
:mod:`labkit._compat`.
"""
from labkit.callbacks.checkpoint import AtomicCheckpointIO, RunCheckpoint
from labkit.callbacks.clock import RunClock
from labkit.callbacks.finetuning import UnfreezeBackbone
from labkit.callbacks.guards import FiniteLossGuard, NonFiniteLossError
from labkit.callbacks.history import History
from labkit.callbacks.model_summary import ModelSummary
from labkit.callbacks.progress import PlainProgress, TerminalProgressBar, progress_bar
from labkit.callbacks.run_summary import RunSummary
from labkit.callbacks.search import TrialPruned, TrialReporter
from labkit.callbacks.seed import EpochSeed, mid_epoch_position
from labkit.callbacks.signals import Interrupted, Preempted, SignalsAsSigterm

__all__ = ["AtomicCheckpointIO", "EpochSeed", "FiniteLossGuard", "History", "Interrupted", "ModelSummary",
           "NonFiniteLossError", "PlainProgress", "Preempted", "RunCheckpoint", "RunClock", "RunSummary",
           "SignalsAsSigterm", "TerminalProgressBar", "TrialPruned", "TrialReporter", "UnfreezeBackbone", "progress_bar",
           "mid_epoch_position"]


def __getattr__(name: str):
    import labkit._compat

    return labkit._compat.moved_attribute(__name__, name)  # BackboneFinetuning, ProgressBar (saved configs name them)
