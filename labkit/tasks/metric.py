"""Metric learning (notes 000 and 002): siamese networks with the contrastive loss, triplet networks with
the triplet margin loss, or any loss of pytorch-metric-learning (PML), optionally with a PML miner.

The loss, miner, distance and reducer are config nodes (``task.loss``, ``task.miner``, ``task.distance``,
``task.reducer``; built by :func:`labkit.tasks.losses.build_parts`). A notes' loss takes the data module's fixed
tuples; a PML loss takes them as ``indices_tuple``, or, with a miner, the tuples the miner picks in labelled batches
of single images.

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

from labkit import _compat
from labkit.core.errors import IncompatibleError
from labkit.data.batches import PairBatch, TripletBatch
from labkit.models.build import as_dict, model_name
from labkit.schemas import tasks as schema
from labkit.tasks.base import LabTask, probe_output
from labkit.tasks.logging import FirstBatch, log_projector
from labkit.tasks.losses import (
    build_parts,
    class_labels,
    contrastive_loss,
    mined_count,
    pair_indices,
    triplet_indices,
)

__all__ = ["MetricTask", "SiameseTask", "TripletTask", "contrastive_loss"]


class MetricTask(LabTask):
    """Shared parts: the embedding (``embed``, declared by ``embeds``), the compatibility check and the projector
    logging.

    Args:
        margin: the loss margin m (of the notes' loss when ``loss`` is null; the YAML options take it).
        projector: how many embeddings of the first validation batch go to TensorBoard's projector each
            validation epoch (0 = none).
        loss, miner, distance, reducer: config nodes (``_target_``) of the loss, a PML miner, the distance and
            reducer handed to a PML loss and the miner (:mod:`labkit.schemas.metric`); null loss: the notes' loss.
    """

    #: the tuples the data module yields without a miner (pairs, triplets)
    tuples = "pairs"

    monitor = ("val/loss", "min")
    logged_metrics = schema.MetricTask.logged_metrics
    evaluations = ("retrieval",)
    embeds = True  # embed(x) below: predict.py's neighbours, the retrieval report, the run's retrieval figures
    # what sweep summaries and compare.py show first (labkit.tracking.summary): a metrics.json key, or "<report>/<key>" of
    # <run>/evaluation/test/report.json when evaluate.py has written it (retrieval precision@1 and MAP@R)
    headline_metrics = ("test/loss", "retrieval/precision_at_1", "retrieval/map_at_r")

    def __init__(self, model, margin: float = 1.0, projector: int = 256, loss: Any = None, miner: Any = None,
                 distance: Any = None, reducer: Any = None, **kwargs: Any):
        MetricTask.check_args(locals())
        super().__init__(model, **kwargs)
        parts = {"loss": loss, "miner": miner, "distance": distance, "reducer": reducer}
        self.save_hyperparameters({"margin": float(margin), "projector": projector,
                                   **{k: as_dict(v) for k, v in parts.items()}})
        built = build_parts(self.tuples, self.hparams.margin, *(self.hparams[k] for k in parts))
        self.criterion, self.loss_takes, self.miner = built.loss, built.takes, built.miner
        if self.miner is not None:
            self.sampling = "single"  # labelled batches of single images, in which the miner picks the tuples
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
        if self.miner is not None and data.label_kind != "class":
            raise IncompatibleError(f"task.miner={self.hparams.miner['_target_']} mines tuples from class labels, but "
                                    f"data '{data.name}' has {data.label_kind} labels: use task/miner=null")

    # ----- shared loop pieces ---------------------------------------------------------------------
    def _log(self, stage: str, loss: torch.Tensor, n: int, **extra: torch.Tensor) -> None:
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True, batch_size=n)
        for k, v in extra.items():
            if v is not None and v.numel():
                self.log(f"{stage}/{k}", v.mean(), on_step=False, on_epoch=True, batch_size=n)

    def _step(self, batch, stage: str, keep_first: bool = False) -> torch.Tensor:
        if self.miner is not None:
            return self._mined_step(batch, stage, keep_first)
        return self._tuple_step(batch, stage, keep_first)

    def _mined_step(self, batch, stage: str, keep_first: bool) -> torch.Tensor:
        """Training: the loss over the tuples the miner picks in the batch. Validation/test: over every valid
        tuple of the batch, so that the monitored loss does not depend on what the miner finds (a collapsed
        embedding yields no semi-hard triplet, hence a zero mined loss)."""
        x, y = batch
        phi = self.embed(x)
        if stage == "train":
            tuples = self.miner(phi, y)
            loss = self.criterion(phi, y, tuples)
            extra = {"mined": torch.tensor(float(mined_count(tuples)), device=phi.device)}
        else:
            loss, extra = self.criterion(phi, y), {}
        loss = self.penalty(loss, phi)
        self._log(stage, loss, len(x), **extra)
        if keep_first:
            self._keep_projection(x, phi, y)
        return loss

    def penalty(self, loss: torch.Tensor, *phis: torch.Tensor) -> torch.Tensor:
        """The loss plus any regularizer of the embeddings (none here)."""
        return loss

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
    """Siamese network (notes 000/002): the shared network embeds both images of a pair; loss = the notes'
    contrastive loss (:class:`labkit.tasks.losses.ContrastiveLoss`) with margin ``m`` (2 in the notes) by default,
    or any PML loss on the pairs (``task/loss=pml_contrastive``), or on a miner's tuples."""

    sampling = "pairs"
    tuples = "pairs"
    loss_kind = "contrastive"

    def __init__(self, model, margin: float = 2.0, **kwargs: Any):
        SiameseTask.check_args(kwargs)
        super().__init__(model, margin=margin, **kwargs)

    # the rules of this class's own arguments (run by __init__ and, on the config, by the pre-flight)
    check_args = staticmethod(schema.SiameseTask.check)

    def _tuple_step(self, batch, stage: str, keep_first: bool = False) -> torch.Tensor:
        x1, x2, pair_label, y1 = batch.x1, batch.x2, batch.target, batch.y1
        n = len(x1)
        phi = self.embed(torch.cat([x1, x2]))  # one forward pass: BatchNorm sees both branches together
        phi_i, phi_j = phi[:n], phi[n:]
        if self.loss_takes == "embeddings":
            loss = self.criterion(phi, class_labels(y1, batch.y2), pair_indices(pair_label))
        else:
            loss = self.criterion(phi_i, phi_j, pair_label)
        d = F.pairwise_distance(phi_i, phi_j).detach()
        self._log(stage, loss, n, dist_pos=d[pair_label == 0], dist_neg=d[pair_label == 1])
        if keep_first:
            self._keep_projection(x1, phi_i, y1)
        return loss


class TripletTask(MetricTask):
    """Triplet network (notes 000/002): ``nn.TripletMarginLoss(margin)`` on (anchor, positive, negative) by default,
    or any PML loss on the triplets (``task/loss=pml_triplet_margin``), or on a miner's tuples
    (``task/miner=semi_hard``, labelled batches of single images; the validation/test loss then averages over all
    tuples of a batch).

    Args:
        norm_penalty: beta of note 002's regularizer ``beta * (||phi_i|| + ||phi_j|| + ||phi_k||)`` (0.001 for
            EgoCart; 0 = off).
        norm_reduction: ``batch`` (note 002's code: ``phi.norm(2)`` of each whole (N, D) batch, i.e. its
            Frobenius norm) or ``mean`` (the formula per triplet, averaged over the batch).
    """

    sampling = "triplets"
    tuples = "triplets"
    loss_kind = "triplet"
    logged_metrics = schema.TripletTask.logged_metrics

    def __init__(self, model, norm_penalty: float = 0.0, norm_reduction: str = "batch", **kwargs: Any):
        if isinstance(kwargs.get("miner"), str) and kwargs.get("loss") is None:
            # the hyperparameters of a checkpoint saved when the miner was a word (batch_hard, semi_hard)
            kwargs.update(_compat.old_miner(kwargs["miner"], kwargs.get("margin", 1.0)))
        TripletTask.check_args({"norm_penalty": norm_penalty, "norm_reduction": norm_reduction, **kwargs})
        super().__init__(model, **kwargs)
        self.save_hyperparameters({"norm_penalty": float(norm_penalty), "norm_reduction": norm_reduction})

    # the rules of this class's own arguments (run by __init__ and, on the config, by the pre-flight)
    check_args = staticmethod(schema.TripletTask.check)

    def norm_term(self, *phis: torch.Tensor) -> torch.Tensor:
        if self.hparams.norm_reduction == "batch":
            return sum(p.norm(2) for p in phis)
        return sum(p.norm(2, dim=1) for p in phis).mean()

    def penalty(self, loss: torch.Tensor, *phis: torch.Tensor) -> torch.Tensor:
        """Note 002's embedding-norm penalty, when ``norm_penalty`` is set."""
        if self.hparams.norm_penalty:
            loss = loss + self.hparams.norm_penalty * self.norm_term(*phis)
        return loss

    def _tuple_step(self, batch, stage: str, keep_first: bool = False) -> torch.Tensor:
        xa, xp, xn, ya = batch.anchor, batch.positive, batch.negative, batch.y_anchor
        n = len(xa)
        phi = self.embed(torch.cat([xa, xp, xn]))  # one forward pass for the three branches
        phi_i, phi_j, phi_k = phi[:n], phi[n:2 * n], phi[2 * n:]
        if self.loss_takes == "embeddings":
            loss = self.criterion(phi, class_labels(ya, batch.y_positive, batch.y_negative),
                                  triplet_indices(n, phi.device))
        else:
            loss = self.criterion(phi_i, phi_j, phi_k)
        loss = self.penalty(loss, phi_i, phi_j, phi_k)
        d_pos = F.pairwise_distance(phi_i, phi_j).detach()
        d_neg = F.pairwise_distance(phi_i, phi_k).detach()
        self._log(stage, loss, n, dist_pos=d_pos, dist_neg=d_neg, triplet_acc=(d_pos < d_neg).float())
        if keep_first:
            self._keep_projection(xa, phi_i, ya)
        return loss
