"""Metric learning (notes 000 and 002): siamese networks with the contrastive loss, triplet networks with
the triplet margin loss, optionally with online mining (pytorch-metric-learning).

The network is any model whose output is one vector per image (``(N, D)``): EmbeddingNet, a backbone without
its head, or even a classifier, whose logits then serve as a D = num_classes embedding. Pairs and triplets
come from the data module (``sampling = "pairs"`` / ``"triplets"``, see :mod:`labkit.data.sampling`) as the
NamedTuples of :mod:`labkit.data.batches`:

* pairs:    ``PairBatch(x1, x2, target, y1, y2)``, target 0 = similar, 1 = dissimilar;
* triplets: ``TripletBatch(anchor, positive, negative, y_anchor, y_positive, y_negative)``.

Both tasks log ``{train,val,test}/loss`` plus the mean distance of similar and dissimilar pairs
(``/dist_pos``, ``/dist_neg``), and, each validation epoch, the embeddings of the first validation batch to
TensorBoard's projector (labels as metadata, thumbnails as sprites).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from labkit.core.errors import IncompatibleError
from labkit.data.batches import PairBatch, TripletBatch
from labkit.models.build import model_name
from labkit.schemas import tasks as schema
from labkit.tasks.base import LabTask, probe_output
from labkit.tasks.logging import FirstBatch, log_projector


def contrastive_loss(phi_i: torch.Tensor, phi_j: torch.Tensor, pair_label: torch.Tensor,
                     margin: float = 2.0) -> torch.Tensor:
    """Notes 000/002: ``L = 1/2 (1 - l) d^2 + 1/2 l max(0, m - d)^2``, ``d = ||phi_i - phi_j||_2``, averaged over
    the batch; ``l = 0`` for a similar pair, ``1`` for a dissimilar one."""
    d = F.pairwise_distance(phi_i, phi_j)
    l = pair_label.to(d.dtype)
    return (0.5 * (1 - l) * d.pow(2) + 0.5 * l * (margin - d).clamp(min=0).pow(2)).mean()


class MetricTask(LabTask):
    """Shared parts: the embedding (``embed``, declared by ``embeds``), the compatibility check and the projector
    logging.

    Args:
        margin: the loss margin m.
        projector: how many embeddings of the first validation batch go to TensorBoard's projector each
            validation epoch (0 = none).
    """

    monitor = ("val/loss", "min")
    logged_metrics = schema.MetricTask.logged_metrics
    evaluations = ("retrieval",)
    embeds = True  # embed(x) below: predict.py's neighbours, the retrieval report, the run's retrieval figures
    # what sweep summaries and compare.py show first (labkit.tracking.summary): a metrics.json key, or "<report>/<key>" of
    # <run>/evaluation/test/report.json when evaluate.py has written it (retrieval precision@1 and MAP@R)
    headline_metrics = ("test/loss", "retrieval/precision_at_1", "retrieval/map_at_r")

    def __init__(self, model, margin: float = 1.0, projector: int = 256, **kwargs: Any):
        MetricTask.check_args(locals())
        super().__init__(model, **kwargs)
        self.save_hyperparameters({"margin": float(margin), "projector": projector})
        self._first_val = FirstBatch()

    # the rules of this class's own arguments (run by __init__ and, on the config, by the pre-flight)
    check_args = staticmethod(schema.MetricTask.check)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding of a batch of images: ``(N, D)``."""
        return self.model(x).flatten(1)

    def check_compatible(self, data) -> None:
        super().check_compatible(data)
        name = model_name(self.hparams.model)
        out = probe_output(self.model, data.input_shape, name)
        if out.ndim != 2:
            raise IncompatibleError(
                f"task {type(self).__name__} needs a network that outputs one vector per image, shape (N, D), but "
                f"model '{name}' outputs {tuple(out.shape)} on input {tuple(data.input_shape)}: choose an embedding "
                f"network such as model=embedding_net")

    # ----- shared loop pieces ---------------------------------------------------------------------
    def _log(self, stage: str, loss: torch.Tensor, n: int, **extra: torch.Tensor) -> None:
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True, batch_size=n)
        for k, v in extra.items():
            if v is not None and v.numel():
                self.log(f"{stage}/{k}", v.mean(), on_step=False, on_epoch=True, batch_size=n)

    def training_step(self, batch, batch_idx):
        loss = self._step(batch, "train")
        return loss if loss.requires_grad else None  # a network without parameters (raw pixels) learns nothing

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val", keep_first=batch_idx == 0)

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0):
        """(embeddings, labels) of single batches ``(x, y)``, or of the first images of pair/triplet batches."""
        if isinstance(batch, PairBatch):
            return self.embed(batch.x1), batch.y1
        if isinstance(batch, TripletBatch):
            return self.embed(batch.anchor), batch.y_anchor
        x, y = batch
        return self.embed(x), y

    def configure_optimizers(self):
        if not any(p.requires_grad for p in self.parameters()):
            return None  # nothing to train (e.g. model=raw_pixels): Lightning runs without an optimizer
        return super().configure_optimizers()

    # ----- TensorBoard projector -----------------------------------------------------------------------
    def _keep_projection(self, x: torch.Tensor, emb: torch.Tensor, y: torch.Tensor) -> None:
        n = self.hparams.projector
        if n:
            self._first_val.keep(self, emb=emb[:n], y=y[:n], x=x[:n])

    def on_validation_epoch_end(self) -> None:
        kept = self._first_val.take()
        if kept is not None:
            log_projector(self, kept["emb"], kept["y"], kept["x"])


class SiameseTask(MetricTask):
    """Siamese network (notes 000/002): the shared network embeds both images of a pair; loss =
    :func:`contrastive_loss` with margin ``m`` (2 in the notes)."""

    sampling = "pairs"
    loss_kind = "contrastive"

    def __init__(self, model, margin: float = 2.0, **kwargs: Any):
        super().__init__(model, margin=margin, **kwargs)

    def _step(self, batch, stage: str, keep_first: bool = False) -> torch.Tensor:
        x1, x2, pair_label, y1 = batch.x1, batch.x2, batch.target, batch.y1
        n = len(x1)
        phi = self.embed(torch.cat([x1, x2]))  # one forward pass: BatchNorm sees both branches together
        phi_i, phi_j = phi[:n], phi[n:]
        loss = contrastive_loss(phi_i, phi_j, pair_label, self.hparams.margin)
        d = F.pairwise_distance(phi_i, phi_j).detach()
        self._log(stage, loss, n, dist_pos=d[pair_label == 0], dist_neg=d[pair_label == 1])
        if keep_first:
            self._keep_projection(x1, phi_i, y1)
        return loss


class TripletTask(MetricTask):
    """Triplet network (notes 000/002): ``nn.TripletMarginLoss(margin)`` on (anchor, positive, negative).

    Args:
        norm_penalty: beta of note 002's regularizer ``beta * (||phi_i|| + ||phi_j|| + ||phi_k||)`` (0.001 for
            EgoCart; 0 = off).
        norm_reduction: ``batch`` (note 002's code: ``phi.norm(2)`` of each whole (N, D) batch, i.e. its
            Frobenius norm) or ``mean`` (the formula per triplet, averaged over the batch).
        miner: ``null`` (fixed triplet lists from the data module), ``batch_hard`` or ``semi_hard``: online mining
            inside labelled training batches with pytorch-metric-learning (the data module then yields single
            images); needs class labels. The validation/test loss then averages over all triplets of a batch.
    """

    sampling = "triplets"
    loss_kind = "triplet"
    logged_metrics = schema.TripletTask.logged_metrics

    def __init__(self, model, norm_penalty: float = 0.0, norm_reduction: str = "batch", miner: str | None = None,
                 **kwargs: Any):
        TripletTask.check_args(locals())
        super().__init__(model, **kwargs)
        self.save_hyperparameters({"norm_penalty": float(norm_penalty),
                                   "norm_reduction": norm_reduction, "miner": miner})
        self.criterion = nn.TripletMarginLoss(margin=self.hparams.margin)
        if miner is not None:
            self.sampling = "single"
            self.miner, self.mined_loss = _pml(miner, self.hparams.margin)

    # the rules of this class's own arguments (run by __init__ and, on the config, by the pre-flight)
    check_args = staticmethod(schema.TripletTask.check)

    def check_compatible(self, data) -> None:
        super().check_compatible(data)
        if self.hparams.miner and data.label_kind != "class":
            raise IncompatibleError(f"task.miner={self.hparams.miner} mines triplets from class labels, but data "
                                    f"'{data.name}' has {data.label_kind} labels: use task.miner=null")

    def norm_term(self, *phis: torch.Tensor) -> torch.Tensor:
        if self.hparams.norm_reduction == "batch":
            return sum(p.norm(2) for p in phis)
        return sum(p.norm(2, dim=1) for p in phis).mean()

    def _step(self, batch, stage: str, keep_first: bool = False) -> torch.Tensor:
        if self.hparams.miner:
            return self._mined_step(batch, stage, keep_first)
        xa, xp, xn, ya = batch.anchor, batch.positive, batch.negative, batch.y_anchor
        n = len(xa)
        phi = self.embed(torch.cat([xa, xp, xn]))  # one forward pass for the three branches
        phi_i, phi_j, phi_k = phi[:n], phi[n:2 * n], phi[2 * n:]
        loss = self.criterion(phi_i, phi_j, phi_k)
        if self.hparams.norm_penalty:
            loss = loss + self.hparams.norm_penalty * self.norm_term(phi_i, phi_j, phi_k)
        d_pos = F.pairwise_distance(phi_i, phi_j).detach()
        d_neg = F.pairwise_distance(phi_i, phi_k).detach()
        self._log(stage, loss, n, dist_pos=d_pos, dist_neg=d_neg, triplet_acc=(d_pos < d_neg).float())
        if keep_first:
            self._keep_projection(xa, phi_i, ya)
        return loss

    def _mined_step(self, batch, stage: str, keep_first: bool) -> torch.Tensor:
        """Training: the loss over the triplets the miner picks in the batch. Validation/test: over every valid
        triplet of the batch, so that the monitored loss does not depend on what the miner finds (a collapsed
        embedding yields no semi-hard triplet, hence a zero mined loss)."""
        x, y = batch
        phi = self.embed(x)
        if stage == "train":
            triplets = self.miner(phi, y)
            loss = self.mined_loss(phi, y, triplets)
            extra = {"mined": torch.tensor(float(len(triplets[0])), device=phi.device)}
        else:
            loss, extra = self.mined_loss(phi, y), {}
        if self.hparams.norm_penalty:
            loss = loss + self.hparams.norm_penalty * self.norm_term(phi)
        self._log(stage, loss, len(x), **extra)
        if keep_first:
            self._keep_projection(x, phi, y)
        return loss


def _pml(miner: str, margin: float):
    """(miner, loss) from pytorch-metric-learning with plain Euclidean distances (as nn.TripletMarginLoss, no
    embedding normalization) and the loss averaged over all mined triplets."""
    from pytorch_metric_learning import losses, miners
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.reducers import MeanReducer

    dist = LpDistance(normalize_embeddings=False, p=2)
    if miner == "batch_hard":
        m = miners.BatchHardMiner(distance=dist)
    else:
        m = miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard", distance=dist)
    loss = losses.TripletMarginLoss(margin=margin, distance=dist, reducer=MeanReducer())
    return m, loss
