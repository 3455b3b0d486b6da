"""Schemas of the tasks (:mod:`labkit.tasks`): one per ``_target_`` of ``conf/task/``, their rules, and the metric
names each task logs (what a callback's ``monitor`` and ``optimized_metric`` may name: the task classes read
:attr:`logged_metrics` from here)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Optional

from labkit.core import checks
from labkit.schemas.base import schema

FREEZE_CHOICES = (None, "backbone")
SCHEDULER_INTERVALS = ("epoch", "step")


def per_stage(*names: str, stages: tuple[str, ...] = ("train", "val", "test")) -> tuple[str, ...]:
    """``("train/<name>", "val/<name>", "test/<name>", ...)``: metric names for ``logged_metrics``."""
    return tuple(f"{s}/{n}" for s in stages for n in names)


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


@dataclass
class LabTask:
    """What every task takes (``labkit.tasks.LabTask``). The network (``model``) is the model group's config, handed
    to the task when it is built; it is not a key of ``task``."""

    #: constructor arguments filled in by labkit rather than the task's config
    injected: ClassVar[tuple[str, ...]] = ("model",)
    #: every metric name the task logs (empty: not declared, nothing checked)
    logged_metrics: ClassVar[tuple[str, ...]] = ()

    _recursive_: bool = False  # the task builds its network and optimizer itself
    optimizer: Any = None  # a partial optimizer config (task/optimizer=sgd|adam|adamw)
    scheduler: Any = None  # a partial scheduler config (task/scheduler=none|step|cosine|onecycle)
    scheduler_interval: str = "epoch"  # step the scheduler every epoch or every batch (step)
    compile: bool = False  # torch.compile the network
    freeze: Any = None  # backbone = train only the new head (null = train everything)
    unfreeze_at_epoch: Optional[int] = None  # at this epoch (0-based) train the whole network again (null = never)
    unfreeze_lr_factor: float = 0.1  # learning rates are multiplied by it when the backbone is unfrozen

    @staticmethod
    def check(a: Mapping[str, Any]) -> None:
        """freeze null or backbone; unfreeze_at_epoch >= 1 and only with freeze=backbone; unfreeze_lr_factor > 0;
        scheduler_interval epoch or step; optimizer lr > 0, momentum in [0, 1], weight_decay >= 0, eps > 0, betas
        in [0, 1)."""
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


@schema("labkit.tasks.ClassificationTask", "task")
class ClassificationTask(LabTask):
    """Cross-entropy classification with accuracy (and top-5 above 5 classes)."""

    logged_metrics: ClassVar[tuple[str, ...]] = per_stage("loss", "acc") + ("test/top5",)

    label_smoothing: float = 0.0  # cross-entropy label smoothing in [0, 1)
    mixup_alpha: float = 0.0  # MixUp's alpha per training batch (0 = off)
    cutmix_alpha: float = 0.0  # CutMix's alpha per training batch (0 = off)
    mix_stop_epoch: Optional[int] = None  # the first epoch (0-based) trained on unmixed batches (null: mix to the end)

    @staticmethod
    def check(a: Mapping[str, Any]) -> None:
        """label_smoothing in [0, 1); mixup_alpha, cutmix_alpha >= 0; mix_stop_epoch an integer >= 0 or null."""
        checks.in_range("task.label_smoothing", a["label_smoothing"], 0.0, 1.0, hi_open=True,
                        hint="0 = plain cross-entropy, typical values 0.05-0.2")
        for key in ("mixup_alpha", "cutmix_alpha"):
            checks.non_negative(f"task.{key}", a.get(key, 0.0),
                                hint="0 = off; typical values 0.2 (MixUp), 1.0 (CutMix)")
        checks.non_negative_int("task.mix_stop_epoch", a.get("mix_stop_epoch"), optional=True,
                                hint="the first epoch (0-based) trained on unmixed batches; null = mix to the end")


@schema("labkit.tasks.autoencoder.AutoencoderTask", "task")
class AutoencoderTask(LabTask):
    """Reconstruction with MSE (note 003)."""

    logged_metrics: ClassVar[tuple[str, ...]] = per_stage("loss", "mse")

    log_images: int = 50  # images in the TensorBoard reconstruction grids (0 = none)

    @staticmethod
    def check(a: Mapping[str, Any]) -> None:
        """log_images an integer >= 0."""
        checks.non_negative_int("task.log_images", a["log_images"], hint="0 disables the image grids")


@schema("labkit.tasks.autoencoder.DenoisingAutoencoderTask", "task")
class DenoisingAutoencoderTask(AutoencoderTask):
    """A denoising autoencoder: Gaussian noise on the input (note 003)."""

    noise_factor: float = 0.5  # standard deviation of the added noise
    target: str = "clean"  # compare the reconstruction with the clean image, or the noisy one (note 003's code)

    @staticmethod
    def check(a: Mapping[str, Any]) -> None:
        """noise_factor >= 0; target clean or noisy."""
        checks.non_negative("task.noise_factor", a["noise_factor"])
        checks.one_of("task.target", a["target"], ("clean", "noisy"),
                      hint="clean is the standard definition, noisy reproduces note 003's code")


@schema("labkit.tasks.autoencoder.SparseAutoencoderTask", "task")
class SparseAutoencoderTask(AutoencoderTask):
    """A sparse autoencoder: a KL sparsity penalty on the code (note 003)."""

    logged_metrics: ClassVar[tuple[str, ...]] = AutoencoderTask.logged_metrics + per_stage("sparsity")

    sparsity: float = 0.05  # the target mean activation rho
    beta: float = 0.5  # weight of the sparsity penalty
    reduction: str = "mean"  # mean (note 003's code) or sum (its formula) over the code units

    @staticmethod
    def check(a: Mapping[str, Any]) -> None:
        """sparsity, beta >= 0; reduction mean or sum."""
        checks.non_negative("task.sparsity", a["sparsity"])
        checks.non_negative("task.beta", a["beta"])
        checks.one_of("task.reduction", a["reduction"], ("mean", "sum"),
                      hint="mean follows note 003's code, sum its formula")


# ----- metric learning: the loss, miner, distance and reducer nodes -----------------------------------------------------
PARTS = ("loss", "miner", "distance", "reducer")
#: the losses that take a miner's tuples: what a message suggests
MINING_LOSSES = ("pml_triplet_margin", "pml_contrastive", "multi_similarity")


def part_options(part: str) -> list[str]:
    """The options of ``conf/task/<part>/`` (what ``task/<part>=<option>`` may name)."""
    from labkit.core.layout import CONF_DIR

    return sorted(p.stem for p in (CONF_DIR / "task" / part).glob("*.yaml"))


def part_error(part: str, value: Any, must: str, suggestion: str = "", listing: bool = True) -> Exception:
    """``task.<part>=<value> is invalid: it must be <must>``, followed by the valid choices (``listing``)."""
    hint = ""
    if listing:
        hint = (f"choose one of conf/task/{part}/ with task/{part}=" + "|".join(part_options(part))
                + f" (null: none), or give a node whose _target_ is a pytorch-metric-learning {part} class")
    return checks.invalid(f"task.{part}", value, must, hint, suggestion)


def check_node(part: str, node: Any) -> Optional[str]:
    """``task.<part>`` is null or a node with a ``_target_``, and a target labkit knows is a ``<part>``; returns the
    target (None for null)."""
    if node is None:
        return None
    target = node.get("_target_") if isinstance(node, Mapping) else None
    if not isinstance(target, str):
        word = node if isinstance(node, str) else None
        close = checks.did_you_mean(word, part_options(part), f"task/{part}=") if word else ""
        if word in part_options(part):
            close = f"Did you mean 'task/{part}={word}'?"
        raise part_error(part, node, f"a config node with a _target_ (a config group option, chosen with "
                                     f"task/{part}=<option>, not task.{part}=<option>)", close)
    from labkit import schemas

    cls = schemas.of(target)
    if cls is not None and cls.schema_group != part:
        raise part_error(part, target, f"a {part}, but {target} is a {cls.schema_group}")
    return target


def is_euclidean(distance: Optional[Mapping[str, Any]]) -> bool:
    """The distance the notes' losses compute: PML's LpDistance with p = 2, power 1, embeddings not normalized."""
    return (distance.get("_target_") == "pytorch_metric_learning.distances.LpDistance"
            and distance.get("normalize_embeddings", True) is False and distance.get("p", 2) == 2
            and distance.get("power", 1) == 1)


def check_parts(kind: str, takes: str, loss: Optional[str], miner: Any, distance: Any, reducer: Any) -> None:
    """What the loss takes (``pairs``/``triplets``: a notes' loss on the task's fixed tuples, ``embeddings``: a PML
    loss) agrees with the task's tuples (``kind``), the miner, the distance and the reducer."""
    what = f"task.loss={loss}" if loss else f"the notes' {kind} loss (task.loss=null)"
    if takes in ("pairs", "triplets") and takes != kind:
        raise part_error("loss", loss, f"a loss on {kind} (this task trains on {kind}), but it takes {takes}")
    if takes == "embeddings":
        return
    if miner is not None:
        raise part_error("miner", miner.get("_target_"),
                         f"null with {what}: that loss takes the data module's fixed {kind}, a miner needs a "
                         f"pytorch-metric-learning loss (task/loss={'|'.join(MINING_LOSSES)})", listing=False)
    if distance is not None and not is_euclidean(distance):
        raise part_error("distance", distance.get("_target_"),
                         f"the Euclidean distance (task/distance=euclidean) or null with {what}, which computes "
                         f"Euclidean distances; another distance needs a pytorch-metric-learning loss "
                         f"(task/loss={'|'.join(MINING_LOSSES)})", listing=False)
    if reducer is not None and reducer.get("_target_") != "pytorch_metric_learning.reducers.MeanReducer":
        raise part_error("reducer", reducer.get("_target_"),
                         f"the mean (task/reducer=mean) or null with {what}, which averages over the batch; another "
                         f"reducer needs a pytorch-metric-learning loss (task/loss={'|'.join(MINING_LOSSES)})",
                         listing=False)


def check_metric_parts(a: Mapping[str, Any], kind: str) -> None:
    """Each part null or a node with a _target_ of the right kind; the loss agrees with the task's tuples, the miner,
    the distance and the reducer (a target without a schema is checked when the task builds it)."""
    targets = {part: check_node(part, a.get(part)) for part in PARTS}
    from labkit import schemas

    loss = targets["loss"]
    cls = schemas.of(loss) if loss else None
    if loss is None or cls is not None:
        takes = getattr(cls, "takes", kind) if cls is not None else kind
        check_parts(kind, takes, loss, a.get("miner"), a.get("distance"), a.get("reducer"))


@dataclass
class MetricTask(LabTask):
    """Metric learning (siamese, triplet): an embedding network trained on pairs or triplets, or on the tuples a
    miner picks in labelled batches."""

    logged_metrics: ClassVar[tuple[str, ...]] = per_stage("loss", "dist_pos", "dist_neg") + ("train/mined",)

    margin: float = 1.0  # the margin m, which conf/task/loss/ and conf/task/miner/ options take (${..margin})
    projector: int = 256  # embeddings sent to TensorBoard's projector each validation epoch (0 = off)
    # the loss (task/loss=...): a notes' loss on the fixed tuples, or a pytorch-metric-learning loss (null: the notes')
    loss: Any = None
    # a pytorch-metric-learning miner (task/miner=...): the loss then takes the tuples it picks in labelled batches of
    # single images instead of the data module's fixed tuples (null: fixed tuples)
    miner: Any = None
    # the distance handed to a pytorch-metric-learning loss and the miner (task/distance=...; null: their own)
    distance: Any = None
    # the reducer handed to a pytorch-metric-learning loss (task/reducer=...; null: the loss's own)
    reducer: Any = None

    @staticmethod
    def check(a: Mapping[str, Any]) -> None:
        """margin >= 0; projector an integer >= 0; loss, miner, distance, reducer null or config nodes with a
        _target_ of their kind."""
        checks.non_negative("task.margin", a["margin"])
        checks.non_negative_int("task.projector", a["projector"], hint="0 = off")
        for part in PARTS:
            check_node(part, a.get(part))


@schema("labkit.tasks.metric.SiameseTask", "task")
class SiameseTask(MetricTask):
    """Siamese network: the notes' contrastive loss on pairs by default (task/loss=contrastive)."""

    margin: float = 2.0  # the contrastive loss's margin m (the notes' value)

    @staticmethod
    def check(a: Mapping[str, Any]) -> None:
        """the loss takes pairs or embeddings; a miner, a distance other than Euclidean, a reducer other than the
        mean: only with a pytorch-metric-learning loss."""
        check_metric_parts(a, "pairs")


@schema("labkit.tasks.metric.TripletTask", "task")
class TripletTask(MetricTask):
    """Triplet network: torch's nn.TripletMarginLoss on triplets by default (notes 000/002, task/loss=triplet_margin)."""

    logged_metrics: ClassVar[tuple[str, ...]] = MetricTask.logged_metrics + per_stage("triplet_acc")

    norm_penalty: float = 0.0  # note 002's embedding-norm penalty beta (0 = off)
    norm_reduction: str = "batch"  # batch (note 002's code) or mean (per triplet)

    @staticmethod
    def check(a: Mapping[str, Any]) -> None:
        """norm_penalty >= 0; norm_reduction batch or mean; the loss takes triplets or embeddings; a miner, a
        distance other than Euclidean, a reducer other than the mean: only with a pytorch-metric-learning loss."""
        checks.non_negative("task.norm_penalty", a["norm_penalty"])
        checks.one_of("task.norm_reduction", a["norm_reduction"], ("batch", "mean"),
                      hint="batch follows note 002's code, mean is per triplet")
        check_metric_parts(a, "triplets")
