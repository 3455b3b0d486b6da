"""Base LightningModule of every labkit task.

A task owns a network (rebuilt from its config dict, so checkpoints are self-contained), a loss,
metrics and the optimizer/scheduler configs. It declares which samples it needs
(:attr:`sampling`) and which metric picks the best checkpoint (:attr:`monitor`), and what its callers may ask of it
(evaluate.py, predict.py, export.py, the reports, the sweep summaries and compare.py), with defaults here so that
nobody has to probe a task for them:

* :attr:`evaluations`: the reports ``evaluate.py`` writes when no ``reports=`` is given;
* :attr:`headline_metrics`: the figures tables show first;
* :attr:`logged_metrics`: the metric names it logs (what a callback may monitor);
* :attr:`embeds`: :meth:`embed` gives an embedding (metric learning);
* :attr:`reconstructs`: :meth:`encode` and :meth:`decode` form an autoencoder (:attr:`encodes`: :meth:`encode` works,
  also for a classifier whose network has its own ``encode``, e.g. an EncoderClassifier).
"""
from __future__ import annotations

import logging
from typing import Any, ClassVar, Mapping

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from labkit.callbacks.finetuning import finetuning_callbacks
from labkit.core.errors import ConfigError, IncompatibleError
from labkit.models._shape import count_parameters
from labkit.models.build import as_dict, build_model
from labkit.schemas import tasks as schema

log = logging.getLogger(__name__)


per_stage = schema.per_stage  # (kept here for code that imports it from the task base)


class LabTask(pl.LightningModule):
    """What every task has: the network (``model``, a config dict), the optimizer and scheduler configs, ``compile``
    and the transfer-learning options (``freeze``, ``unfreeze_at_epoch``, ``unfreeze_lr_factor``).

    One constructor style: a subclass takes ``model``, then only its own options, then ``**kwargs`` for these
    common ones, which it passes on with ``super().__init__(model, **kwargs)``."""

    sampling = "single"
    monitor = ("val/loss", "min")
    # every metric name the task logs with self.log (what a callback's monitor may name, checked at config time);
    # empty = not declared, nothing checked. A subclass that logs more extends its parent's tuple.
    logged_metrics: tuple[str, ...] = ()
    # the reports evaluate.py writes for this task when no reports=[...] is given: names registered in
    # labkit.evaluation (@register). Empty: none by default, evaluate.py then asks for reports=[...].
    evaluations: ClassVar[tuple[str, ...]] = ()
    # what sweep summaries and compare.py show first (labkit.tracking.summary): keys of metrics.json (test/acc), or
    # "<report>/<key>" of <run>/evaluation/test/report.json where <key> is one of the report's declared headlines
    headline_metrics: ClassVar[tuple[str, ...]] = ("test/loss",)
    # what the logged */loss measures (compare.py draws the losses of different kinds in panels of their own)
    loss_kind: ClassVar[str] = "loss"
    # embed(x) -> (N, D) is the embedding the task trains (metric learning): predict.py shows nearest neighbours,
    # the retrieval report and the training run's retrieval figures search with it. False: embed raises.
    embeds: ClassVar[bool] = False
    # encode(x) -> code and decode(code) -> reconstruction, with the input's shape: the task trains an autoencoder
    # (predict.py shows reconstructions, the compression and anomaly reports decode). False: decode raises.
    reconstructs: ClassVar[bool] = False

    def __init__(self, model: Mapping[str, Any], optimizer: Mapping[str, Any] | None = None,
                 scheduler: Mapping[str, Any] | None = None, scheduler_interval: str = "epoch",
                 compile: bool = False, freeze: str | None = None, unfreeze_at_epoch: int | None = None,
                 unfreeze_lr_factor: float = 0.1):
        super().__init__()
        LabTask.check_args(locals())
        freeze = None if freeze is False else freeze
        self.save_hyperparameters({"model": as_dict(model), "optimizer": as_dict(optimizer),
                                   "scheduler": as_dict(scheduler), "scheduler_interval": scheduler_interval,
                                   "compile": compile, "freeze": freeze, "unfreeze_at_epoch": unfreeze_at_epoch,
                                   "unfreeze_lr_factor": unfreeze_lr_factor})
        self.hparams.model.pop("init_from", None)  # stored by labkit < 0.2, whose weights are in the checkpoint
        self.model = build_model(self.hparams.model)

    # the rules of this class's own arguments (run by __init__ and, on the config, by the pre-flight)
    check_args = staticmethod(schema.LabTask.check)

    def forward(self, x):
        return self.model(x)

    # ----- the capabilities declared above ------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding of a batch of images, ``(N, D)``: only for a task that declares :attr:`embeds`."""
        raise IncompatibleError(
            f"task {type(self).__name__} does not train an embedding ({type(self).__name__}.embeds is False), so it "
            f"has no embed(x): embeddings come from the metric-learning tasks (task=siamese or task=triplet); the "
            f"retrieval report embeds any other task with its network's penultimate features")

    @property
    def encodes(self) -> bool:
        """Whether :meth:`encode` works: an autoencoder task (:attr:`reconstructs`), or a network with its own
        ``encode(x)`` (e.g. :class:`labkit.models.autoencoders.EncoderClassifier` under a classification task)."""
        return self.reconstructs or callable(getattr(self.model, "encode", None))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The network's code of a batch of images (its ``encode(x)``), where :attr:`encodes` says there is one."""
        if not self.encodes:
            raise IncompatibleError(
                f"task {type(self).__name__} has no code to give: its network {type(self.model).__name__} has no "
                f"encode(x); codes come from autoencoders (task=autoencoder) and from classifiers built on their "
                f"encoder (model=encoder_classifier)")
        return self.model.encode(x)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """The reconstruction of a code given by :meth:`encode`: only for a task that declares :attr:`reconstructs`."""
        if not self.reconstructs:
            raise IncompatibleError(
                f"task {type(self).__name__} does not train an autoencoder ({type(self).__name__}.reconstructs is "
                f"False), so it has no decode(code): reconstructions come from task=autoencoder, denoising_autoencoder "
                f"or sparse_autoencoder")
        return self.model.decode(code)

    def setup(self, stage: str) -> None:
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.model = torch.compile(self.model)
            self._compiled = True

    def on_fit_start(self) -> None:
        total, trainable = count_parameters(self.model), count_parameters(self.model, trainable_only=True)
        log.info("model %s: %s parameters (%s trainable)", type(self.model).__name__, f"{total:,}", f"{trainable:,}")
        if self.logger is not None:
            self.logger.log_metrics({"model/params": total, "model/trainable_params": trainable}, step=0)

    def check_compatible(self, data) -> None:
        """Tell ``data`` the batches this task trains on (``data.sampling``, the one place it is set; called once
        by :func:`labkit.run.lifecycle.build`), then raise :class:`IncompatibleError` when this task and its network
        cannot work on ``data``. Subclasses call ``super().check_compatible(data)`` first."""
        data.sampling = self.sampling

    def configure_callbacks(self):
        """Transfer learning (``freeze``/``unfreeze_at_epoch``/``unfreeze_lr_factor``, see labkit.callbacks.finetuning)."""
        return finetuning_callbacks(self.hparams.get("freeze"), self.hparams.get("unfreeze_at_epoch"),
                                    self.hparams.get("unfreeze_lr_factor", 0.1))

    def configure_optimizers(self):
        if not self.hparams.optimizer:
            raise ConfigError("task.optimizer is not set: choose one, e.g. task/optimizer=sgd")
        opt = instantiate(self.hparams.optimizer)
        opt = opt(params=[p for p in self.parameters() if p.requires_grad])
        sched_cfg = self.hparams.scheduler
        if not sched_cfg:
            return opt
        sched_cfg = dict(sched_cfg)
        interval = self.hparams.scheduler_interval
        if sched_cfg.get("_target_", "").endswith("OneCycleLR"):
            if sched_cfg.get("total_steps") is None:  # conf/task/scheduler/onecycle.yaml: null = from the trainer
                sched_cfg["total_steps"] = int(self.trainer.estimated_stepping_batches)
            interval = "step"
        if sched_cfg.get("_target_", "").endswith("CosineAnnealingLR") and sched_cfg.get("T_max") is None:
            sched_cfg["T_max"] = max(1, int(self.trainer.max_epochs or 1))
        sched = instantiate(sched_cfg)(optimizer=opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": interval}}


def probe_output(model: torch.nn.Module, input_shape, name: str) -> torch.Tensor:
    """Run ``model`` on zeros of ``input_shape`` (batch of 2) and turn shape errors into a clear message."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(torch.zeros(2, *input_shape))
    except RuntimeError as e:
        raise IncompatibleError(f"model '{name}' cannot run on input {tuple(input_shape)}: {str(e).splitlines()[0]}") \
            from None
    finally:
        model.train(was)
