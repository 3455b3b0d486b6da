"""Rules of the tasks' arguments (:mod:`labkit.tasks`): each function is a class's ``check_args``. No torch here."""
from __future__ import annotations

from typing import Any, Mapping

from labkit.core import checks

FREEZE_CHOICES = (None, "backbone")
MINERS = ("batch_hard", "semi_hard")
SCHEDULER_INTERVALS = ("epoch", "step")


def check_finetune_args(freeze: Any, unfreeze_at_epoch: Any, unfreeze_lr_factor: Any) -> str | None:
    """Validate the three transfer-learning arguments of a task; returns ``freeze`` normalized (``False`` -> ``None``)."""
    if freeze is False:
        freeze = None
    checks.one_of("task.freeze", freeze, FREEZE_CHOICES,
                  hint="null trains the whole network, backbone only the new head")
    if unfreeze_at_epoch is not None:
        checks.integer("task.unfreeze_at_epoch", unfreeze_at_epoch, 1,
                       hint="0-based: N epochs of head-only training come first; null never unfreezes")
        if freeze is None:
            raise checks.invalid("task.unfreeze_at_epoch", unfreeze_at_epoch, "null here",
                                 f"task.unfreeze_at_epoch={unfreeze_at_epoch} needs task.freeze=backbone: without it "
                                 "nothing is frozen, so there is nothing to unfreeze")
    checks.positive("task.unfreeze_lr_factor", unfreeze_lr_factor,
                    hint="the learning rate is multiplied by it when the backbone is unfrozen, e.g. 0.1")
    return freeze


def lab_task(a: Mapping[str, Any]) -> None:
    """``LabTask``: fine-tuning options, the scheduler interval and the optimizer's numbers."""
    check_finetune_args(a["freeze"], a["unfreeze_at_epoch"], a["unfreeze_lr_factor"])
    checks.one_of("task.scheduler_interval", a["scheduler_interval"], SCHEDULER_INTERVALS)
    opt = a["optimizer"] or {}
    checks.positive("task.optimizer.lr", opt.get("lr"), optional=True)
    checks.fraction("task.optimizer.momentum", opt.get("momentum"), optional=True,
                    hint="the notes use 0.99, and above 1 the updates grow without bound")
    checks.non_negative("task.optimizer.weight_decay", opt.get("weight_decay"), optional=True)
    checks.positive("task.optimizer.eps", opt.get("eps"), optional=True)
    for i, beta in enumerate(opt.get("betas") or ()):
        checks.in_range(f"task.optimizer.betas[{i}]", beta, 0.0, 1.0, hi_open=True)


def classification(a: Mapping[str, Any]) -> None:
    """``ClassificationTask``: label smoothing."""
    checks.in_range("task.label_smoothing", a["label_smoothing"], 0.0, 1.0, hi_open=True,
                    hint="0 = plain cross-entropy, typical values 0.05-0.2")
    for key in ("mixup_alpha", "cutmix_alpha"):
        checks.non_negative(f"task.{key}", a.get(key, 0.0), hint="0 = off; typical values 0.2 (MixUp), 1.0 (CutMix)")
    checks.non_negative_int("task.mix_stop_epoch", a.get("mix_stop_epoch"), optional=True,
                            hint="the first epoch (0-based) trained on unmixed batches; null = mix to the end")


def autoencoder(a: Mapping[str, Any]) -> None:
    """``AutoencoderTask``: the number of images in the TensorBoard grids."""
    checks.non_negative_int("task.log_images", a["log_images"], hint="0 disables the image grids")


def denoising_autoencoder(a: Mapping[str, Any]) -> None:
    """``DenoisingAutoencoderTask``: the noise and what the reconstruction is compared with."""
    checks.non_negative("task.noise_factor", a["noise_factor"])
    checks.one_of("task.target", a["target"], ("clean", "noisy"),
                  hint="clean is the standard definition, noisy reproduces note 003's code")


def sparse_autoencoder(a: Mapping[str, Any]) -> None:
    """``SparseAutoencoderTask``: the sparsity target, its weight and reduction."""
    checks.non_negative("task.sparsity", a["sparsity"])
    checks.non_negative("task.beta", a["beta"])
    checks.one_of("task.reduction", a["reduction"], ("mean", "sum"),
                  hint="mean follows note 003's code, sum its formula")


def metric(a: Mapping[str, Any]) -> None:
    """``MetricTask`` (siamese, triplet): the margin and the projector's size."""
    checks.non_negative("task.margin", a["margin"])
    checks.non_negative_int("task.projector", a["projector"], hint="0 = off")


def triplet(a: Mapping[str, Any]) -> None:
    """``TripletTask``: the norm penalty and the miner."""
    checks.non_negative("task.norm_penalty", a["norm_penalty"])
    checks.one_of("task.norm_reduction", a["norm_reduction"], ("batch", "mean"),
                  hint="batch follows note 002's code, mean is per triplet")
    checks.one_of("task.miner", a["miner"], (None, *MINERS))
