"""Schemas of the optimizers and learning-rate schedulers (``conf/task/optimizer/``, ``conf/task/scheduler/``):
torch's classes as partial configs (``_partial_: true``: the task adds the parameters / the optimizer). Their values
are checked by the task's rules (``labkit.schemas.tasks.LabTask.check``)."""
from __future__ import annotations

from typing import Any, ClassVar, List, Optional

from labkit.schemas.base import MISSING, schema


@schema("torch.optim.SGD", "optim")
class SGD:
    """Stochastic gradient descent (the notes' optimizer: lr 0.01, momentum 0.99)."""

    _partial_: bool = True
    lr: float = 0.001  # learning rate
    momentum: float = 0.0  # momentum factor in [0, 1]
    dampening: float = 0.0  # dampening for momentum
    weight_decay: float = 0.0  # L2 penalty
    nesterov: bool = False  # Nesterov momentum
    maximize: bool = False  # maximize the objective instead
    foreach: Optional[bool] = None  # torch's multi-tensor implementation (null: torch decides)
    differentiable: bool = False  # autograd through the step
    fused: Optional[bool] = None  # the fused implementation (null: torch decides)


@schema("torch.optim.Adam", "optim")
class Adam:
    """Adam (Keras' defaults: lr 0.001, betas 0.9/0.999, eps 1e-7 there, 1e-8 in torch)."""

    _partial_: bool = True
    lr: float = 0.001  # learning rate
    betas: List[float] = (0.9, 0.999)  # coefficients of the running averages, each in [0, 1)
    eps: float = 1e-8  # added to the denominator
    weight_decay: float = 0.0  # L2 penalty
    amsgrad: bool = False  # the AMSGrad variant
    foreach: Optional[bool] = None  # torch's multi-tensor implementation (null: torch decides)
    maximize: bool = False  # maximize the objective instead
    capturable: bool = False  # safe to capture in a CUDA graph
    differentiable: bool = False  # autograd through the step
    fused: Optional[bool] = None  # the fused implementation (null: torch decides)


@schema("torch.optim.AdamW", "optim")
class AdamW(Adam):
    """Adam with decoupled weight decay."""

    weight_decay: float = 0.01  # decoupled weight decay


@schema("torch.optim.lr_scheduler.StepLR", "scheduler")
class StepLR:
    """Multiply the learning rate by gamma every step_size epochs."""

    _partial_: bool = True
    step_size: int = MISSING  # epochs between decays
    gamma: float = 0.1  # the factor
    last_epoch: int = -1  # the index of the last epoch (-1: start)


@schema("torch.optim.lr_scheduler.CosineAnnealingLR", "scheduler")
class CosineAnnealingLR:
    """Cosine annealing from the optimizer's lr to eta_min over T_max epochs."""

    #: fields the task fills in when the config leaves them null
    filled: ClassVar[tuple[str, ...]] = ("T_max",)

    _partial_: bool = True
    T_max: Optional[int] = None  # epochs of the half cosine (null: trainer.max_epochs)
    eta_min: float = 0.0  # the lowest learning rate
    last_epoch: int = -1  # the index of the last epoch (-1: start)


@schema("torch.optim.lr_scheduler.OneCycleLR", "scheduler")
class OneCycleLR:
    """The one-cycle policy, stepped every batch."""

    _partial_: bool = True
    max_lr: Any = MISSING  # the peak learning rate
    total_steps: Optional[int] = None  # steps of the cycle (null: computed from the trainer)
    epochs: Optional[int] = None  # (with steps_per_epoch, instead of total_steps)
    steps_per_epoch: Optional[int] = None  # (with epochs, instead of total_steps)
    pct_start: float = 0.3  # fraction of the cycle spent increasing the learning rate
    anneal_strategy: str = "cos"  # cos or linear
    cycle_momentum: bool = True  # cycle the momentum inversely
    base_momentum: Any = 0.85  # the lowest momentum
    max_momentum: Any = 0.95  # the highest momentum
    div_factor: float = 25.0  # initial lr = max_lr / div_factor
    final_div_factor: float = 10000.0  # final lr = initial lr / final_div_factor
    three_phase: bool = False  # a third phase annihilating the learning rate
    last_epoch: int = -1  # the index of the last batch (-1: start)
