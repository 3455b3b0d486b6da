"""The parts of a metric-learning task, built from their config nodes (``task.loss``, ``task.miner``,
``task.distance``, ``task.reducer``; see :mod:`labkit.schemas.metric`).

A loss is either one of the notes' losses, called on the data module's fixed tuples (labkit's
:class:`ContrastiveLoss` on pairs, torch's ``nn.TripletMarginLoss`` on triplets, or a module of your own with the
same call), or a loss of pytorch-metric-learning (PML), called as ``loss(embeddings, labels, indices_tuple)`` on the
fixed tuples or on the ones a PML miner picks. One distance (``task.distance``) is handed to the PML loss and the
miner, and the reducer (``task.reducer``) to the PML loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from labkit.core import checks
from labkit.core.errors import ConfigError
from labkit.models.build import as_dict
from labkit.schemas import tasks as schema


def contrastive_loss(phi_i: torch.Tensor, phi_j: torch.Tensor, pair_label: torch.Tensor,
                     margin: float = 2.0) -> torch.Tensor:
    """Notes 000/002: ``L = 1/2 (1 - l) d^2 + 1/2 l max(0, m - d)^2``, ``d = ||phi_i - phi_j||_2``, averaged over
    the batch; ``l = 0`` for a similar pair, ``1`` for a dissimilar one."""
    d = F.pairwise_distance(phi_i, phi_j)
    l = pair_label.to(d.dtype)
    return (0.5 * (1 - l) * d.pow(2) + 0.5 * l * (margin - d).clamp(min=0).pow(2)).mean()


class ContrastiveLoss(nn.Module):
    """The notes' contrastive loss (:func:`contrastive_loss`) as a module: ``loss(phi_i, phi_j, pair_label)``."""

    def __init__(self, margin: float = 2.0):
        super().__init__()
        self.margin = float(margin)

    def forward(self, phi_i: torch.Tensor, phi_j: torch.Tensor, pair_label: torch.Tensor) -> torch.Tensor:
        return contrastive_loss(phi_i, phi_j, pair_label, self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


@dataclass
class MetricParts:
    """What a metric-learning task computes its loss with."""

    loss: nn.Module
    takes: str  # pairs, triplets (a notes' loss on fixed tuples) or embeddings (a PML loss)
    miner: Any = None  # a PML miner, or None (the data module's fixed tuples)


def _pml_base(kind: str):
    from pytorch_metric_learning import distances, losses, miners, reducers

    return {"loss": losses.BaseMetricLossFunction, "miner": miners.BaseMiner, "distance": distances.BaseDistance,
            "reducer": reducers.BaseReducer}[kind]


def _build(part: str, node: Mapping[str, Any], kind: str, **parts: Any):
    """Instantiate ``task.<part>``, with the shared distance/reducer; ConfigError when it is not a ``kind``."""
    obj = instantiate(dict(node), **{k: v for k, v in parts.items() if v is not None})
    base = _pml_base(kind)
    if not isinstance(obj, base):
        raise ConfigError(schema.part_error(part, node["_target_"], f"a pytorch-metric-learning {kind} "
                                            f"({base.__module__}.{base.__name__}), but it is a "
                                            f"{type(obj).__module__}.{type(obj).__name__}"))
    return obj


def tuple_loss_takes(loss: Any, kind: str) -> str:
    """What a built loss takes: ``embeddings`` for a PML loss, else the task's tuples (``kind``)."""
    return "embeddings" if isinstance(loss, _pml_base("loss")) else kind


def build_parts(kind: str, margin: float, loss: Mapping[str, Any] | None, miner: Mapping[str, Any] | None,
                distance: Mapping[str, Any] | None, reducer: Mapping[str, Any] | None) -> MetricParts:
    """The loss (and miner) of a task that trains on ``kind`` (pairs or triplets).

    ``loss=None``: the notes' loss of the task with ``margin``. The rules of :func:`labkit.schemas.tasks.check_parts`
    are run again once the classes are known (a target without a schema is only known here)."""
    loss, miner, distance, reducer = (as_dict(p) for p in (loss, miner, distance, reducer))
    for part, node in (("loss", loss), ("miner", miner), ("distance", distance), ("reducer", reducer)):
        schema.check_node(part, node)
    dist = _build("distance", distance, "distance") if distance else None
    red = _build("reducer", reducer, "reducer") if reducer else None
    if loss is None:
        loss_fn = ContrastiveLoss(margin) if kind == "pairs" else nn.TripletMarginLoss(margin=margin)
    else:
        cls = checks.locate(loss["_target_"])
        if isinstance(cls, type) and issubclass(cls, _pml_base("loss")):
            # PML's losses take the shared distance and reducer as arguments
            loss_fn = instantiate(dict(loss), **{k: v for k, v in (("distance", dist), ("reducer", red)) if v})
        else:
            loss_fn = instantiate(dict(loss))
        if not isinstance(loss_fn, nn.Module):
            raise ConfigError(schema.part_error("loss", loss["_target_"], "a loss module (torch.nn.Module) or a "
                                                "pytorch-metric-learning loss"))
    takes = tuple_loss_takes(loss_fn, kind)
    schema.check_parts(kind, takes, loss["_target_"] if loss else None, miner, distance, reducer)
    mined = _build("miner", miner, "miner", distance=dist) if miner else None
    return MetricParts(loss_fn, takes, mined)


# ----- fixed tuples as PML's indices ---------------------------------------------------------------------------------
def pair_indices(pair_label: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """PML's ``(a1, p, a2, n)`` for the fixed pairs ``(i, n + i)`` of ``cat([phi_i, phi_j])`` (label 0 similar)."""
    n = len(pair_label)
    idx = torch.arange(n, device=pair_label.device)
    same, diff = idx[pair_label == 0], idx[pair_label != 0]
    return same, same + n, diff, diff + n


def triplet_indices(n: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """PML's ``(a, p, n)`` for the fixed triplets ``(i, n + i, 2n + i)`` of ``cat([anchor, positive, negative])``."""
    idx = torch.arange(n, device=device)
    return idx, idx + n, idx + 2 * n


def class_labels(*ys: torch.Tensor) -> torch.Tensor | None:
    """The concatenated class labels for a PML loss, or None when the labels are not classes (poses)."""
    if any(y.ndim != 1 or y.is_floating_point() for y in ys):
        return None
    return torch.cat(ys)


def mined_count(tuples: tuple[torch.Tensor, ...]) -> int:
    """How many tuples a miner picked: triplets, or positive plus negative pairs."""
    return len(tuples[0]) if len(tuples) == 3 else len(tuples[0]) + len(tuples[2])
