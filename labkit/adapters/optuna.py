"""Optuna internals labkit needs. Nothing here imports Optuna: a function works on the objects it is given.

Optuna's public API works on the live ``Trial`` that ``study.ask()`` returned to this process. labkit also handles
trials through ``FrozenTrial`` records (``study.get_trials()``: another worker's trials) and reads what another process
(the training job) wrote into a trial; both go through the study's storage (``Study._storage``), which addresses a
trial by its storage id (``_trial_id``: the public ``number`` counts trials within the study, it is no id).
"""
from __future__ import annotations

from typing import Any


def set_trial_user_attr(study: Any, trial: Any, key: str, value: Any) -> None:
    """Set the user attribute ``key`` of any trial of ``study`` (a ``FrozenTrial`` of another worker too), in the
    study's storage. Raises what the storage raises (``UpdateFinishedTrialError`` for a finished trial).

    Why private: the public setter is ``Trial.set_user_attr`` on the live trial of the process that asked for it;
    a ``FrozenTrial`` has none, and building a ``Trial`` for it runs the sampler's ``before_trial``."""
    study._storage.set_trial_user_attr(trial._trial_id, key, value)


def stored_user_attrs(study: Any, trial: Any) -> dict[str, Any]:
    """The user attributes of ``trial`` as the study's storage holds them now: those other processes set too (the
    training job's pruning report).

    Why private: ``Trial.user_attrs`` is the trial's own cached copy, which does not see other processes' writes;
    the public way to read the storage, ``study.get_trials()``, reads every trial of the study to find one."""
    return dict(study._storage.get_trial(trial._trial_id).user_attrs)
