"""Schemas of the parts of a metric-learning task (``conf/task/loss/``, ``conf/task/miner/``, ``conf/task/distance/``,
``conf/task/reducer/``): the notes' losses (labkit's :class:`~labkit.tasks.losses.ContrastiveLoss`, torch's
``nn.TripletMarginLoss``) and pytorch-metric-learning's (PML) losses, miners, distances and reducers.

Each loss schema says what the loss takes (:attr:`takes`): ``pairs`` or ``triplets`` (a notes' loss, called on the
data module's fixed tuples: ``loss(phi_i, phi_j, l)`` / ``loss(a, p, n)``) or ``embeddings`` (a PML loss, called as
``loss(embeddings, labels, indices_tuple)`` on fixed tuples or on what a miner picks). ``distance`` and ``reducer``
are not fields of a loss or a miner: the task hands them ``task.distance`` and ``task.reducer``, one distance for
the loss and the miner, as PML's examples do. A PML class without a schema here works too (the pre-flight then reads
its signature from the class): give its ``_target_`` in a YAML of your own under ``conf/task/<part>/``.
"""
from __future__ import annotations

from typing import ClassVar

from labkit.schemas.base import schema

PML = "pytorch_metric_learning"


# ----- losses -------------------------------------------------------------------------------------------------------
@schema("labkit.tasks.losses.ContrastiveLoss", "loss")
class ContrastiveLoss:
    """The notes' contrastive loss on pairs: 1/2 (1 - l) d^2 + 1/2 l max(0, m - d)^2, d Euclidean, batch mean."""

    takes: ClassVar[str] = "pairs"

    margin: float = 2.0  # the margin m (the notes' 2; conf/task/loss/contrastive.yaml takes task.margin)


@schema("torch.nn.TripletMarginLoss", "loss")
class TripletMarginLoss:
    """torch's triplet margin loss on (anchor, positive, negative): max(0, d(a, p) - d(a, n) + m), batch mean."""

    takes: ClassVar[str] = "triplets"

    margin: float = 1.0  # the margin m (conf/task/loss/triplet_margin.yaml takes task.margin)
    p: float = 2.0  # the norm of the pairwise distance
    eps: float = 1e-6  # added to the difference before its norm
    swap: bool = False  # the distance swap (also d(p, n) as the negative distance)
    reduction: str = "mean"  # mean, sum or none over the batch


@schema(f"{PML}.losses.TripletMarginLoss", "loss")
class PMLTripletMarginLoss:
    """PML's triplet margin loss: on the fixed triplets or on mined ones (task.miner), with task.distance."""

    takes: ClassVar[str] = "embeddings"

    margin: float = 0.05  # the margin m (conf/task/loss/pml_triplet_margin.yaml takes task.margin)
    swap: bool = False  # the distance swap
    smooth_loss: bool = False  # log(1 + exp(d_ap - d_an)) instead of the hinge
    triplets_per_anchor: str = "all"  # without a miner: triplets drawn per anchor ("all" or an integer)


@schema(f"{PML}.losses.ContrastiveLoss", "loss")
class PMLContrastiveLoss:
    """PML's contrastive loss: max(0, d_pos - pos_margin) for positive pairs, max(0, neg_margin - d_neg) for
    negative ones (not squared, unlike the notes' loss)."""

    takes: ClassVar[str] = "embeddings"

    pos_margin: float = 0.0  # positive pairs closer than this cost nothing
    neg_margin: float = 1.0  # negative pairs farther than this cost nothing


@schema(f"{PML}.losses.MultiSimilarityLoss", "loss")
class MultiSimilarityLoss:
    """Multi-similarity loss (Wang et al. 2019), made for a similarity (task/distance=cosine)."""

    takes: ClassVar[str] = "embeddings"

    alpha: float = 2  # weight of the positive pairs
    beta: float = 50  # weight of the negative pairs
    base: float = 0.5  # the similarity offset lambda


# ----- miners -------------------------------------------------------------------------------------------------------
@schema(f"{PML}.miners.BatchHardMiner", "miner")
class BatchHardMiner:
    """For each anchor of a batch, its farthest positive and its nearest negative (Hermans et al. 2017)."""


@schema(f"{PML}.miners.TripletMarginMiner", "miner")
class TripletMarginMiner:
    """The triplets of a batch that violate the margin: all, hard, semihard or easy ones."""

    margin: float = 0.2  # the margin m (conf/task/miner/semi_hard.yaml takes task.margin)
    type_of_triplets: str = "all"  # all, hard, semihard or easy


@schema(f"{PML}.miners.MultiSimilarityMiner", "miner")
class MultiSimilarityMiner:
    """The pairs the multi-similarity loss learns from (Wang et al. 2019)."""

    epsilon: float = 0.1  # the margin of the pair selection


@schema(f"{PML}.miners.PairMarginMiner", "miner")
class PairMarginMiner:
    """Positive pairs farther than pos_margin and negative pairs closer than neg_margin."""

    pos_margin: float = 0.2  # positive pairs farther than this are mined
    neg_margin: float = 0.8  # negative pairs closer than this are mined


# ----- distances ----------------------------------------------------------------------------------------------------
@schema(f"{PML}.distances.LpDistance", "distance")
class LpDistance:
    """The Lp distance between embeddings (p = 2, power 1, unnormalized: the notes' Euclidean distance)."""

    normalize_embeddings: bool = True  # L2-normalize the embeddings first (PML's default; the notes' losses do not)
    p: float = 2  # the norm
    power: float = 1  # the distance is raised to this power


@schema(f"{PML}.distances.CosineSimilarity", "distance")
class CosineSimilarity:
    """The cosine similarity (a similarity: larger is closer)."""


@schema(f"{PML}.distances.DotProductSimilarity", "distance")
class DotProductSimilarity:
    """The dot product (a similarity: larger is closer)."""

    normalize_embeddings: bool = True  # L2-normalize the embeddings first (then it is the cosine similarity)


# ----- reducers -----------------------------------------------------------------------------------------------------
@schema(f"{PML}.reducers.MeanReducer", "reducer")
class MeanReducer:
    """The mean over every tuple's loss (what the notes' losses do)."""


@schema(f"{PML}.reducers.AvgNonZeroReducer", "reducer")
class AvgNonZeroReducer:
    """The mean over the tuples whose loss is above zero (PML's default for most losses)."""
