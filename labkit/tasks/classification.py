"""Image classification with cross-entropy, as in notes 001 and 003."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from labkit.core.errors import IncompatibleError
from labkit.models.build import model_name
from labkit.schemas import tasks as schema
from labkit.tasks.base import LabTask, probe_output


def batch_mix(num_classes: int, mixup_alpha: float, cutmix_alpha: float):
    """torchvision's batch ``MixUp`` and/or ``CutMix`` for ``num_classes`` (None when both alphas are 0)."""
    from torchvision.transforms import v2

    mixes = ([v2.MixUp(alpha=mixup_alpha, num_classes=num_classes)] if mixup_alpha > 0 else []) + (
        [v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes)] if cutmix_alpha > 0 else [])
    if not mixes:
        return None
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)


class ClassificationTask(LabTask):
    """Cross-entropy classifier. Logs ``{train,val,test}/loss`` and ``/acc`` (per epoch; train loss also per step).

    ``ClassificationTask.load_from_checkpoint(path)`` rebuilds the network from the checkpoint alone.

    ``mixup_alpha`` / ``cutmix_alpha`` > 0 mix each training batch with itself in a shuffled order
    (torchvision.transforms.v2 ``MixUp`` / ``CutMix``, one draw per batch; with both set, each batch picks one of
    the two): the loss is taken against the mixed soft labels and ``train/acc`` against the dominant label.
    ``mix_stop_epoch``: from this epoch (0-based) on, the last epochs train on unmixed batches (null = mix to the end).
    """

    monitor = ("val/acc", "max")
    logged_metrics = schema.ClassificationTask.logged_metrics
    evaluations = ("classification",)
    # what sweep summaries and compare.py show first (labkit.tracking.summary): metrics.json keys
    headline_metrics = ("test/acc", "test/error")
    loss_kind = "cross-entropy"

    def __init__(self, model, label_smoothing: float = 0.0, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                 mix_stop_epoch: int | None = None, **kwargs: Any):
        ClassificationTask.check_args(locals())
        super().__init__(model, **kwargs)
        self.save_hyperparameters({"label_smoothing": label_smoothing, "mixup_alpha": mixup_alpha,
                                   "cutmix_alpha": cutmix_alpha, "mix_stop_epoch": mix_stop_epoch})
        n = int(self.hparams.model.get("num_classes", 0)) or self._infer_classes()
        self.num_classes = n
        # validate_args=False: the checks call torch.unique on the labels at every update, a host sync per step
        # on a GPU; check_compatible and the data module's label check already guarantee what they verify
        self.train_acc = MulticlassAccuracy(n, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(n, average="micro", validate_args=False)
        self.test_acc = MulticlassAccuracy(n, average="micro", validate_args=False)
        self.test_top5 = MulticlassAccuracy(n, top_k=min(5, n), average="micro", validate_args=False)
        self.mix = batch_mix(n, mixup_alpha, cutmix_alpha)

    # the rules of this class's own arguments (run by __init__ and, on the config, by the pre-flight)
    check_args = staticmethod(schema.ClassificationTask.check)

    def _infer_classes(self) -> int:
        last = [m for m in self.model.modules() if isinstance(m, torch.nn.Linear)]
        return last[-1].out_features if last else 0

    def check_compatible(self, data) -> None:
        super().check_compatible(data)
        name = model_name(self.hparams.model)
        out = probe_output(self.model, data.input_shape, name)
        if out.ndim == 2 and out.shape[1] == data.num_classes:
            return
        if "num_classes" in self.hparams.model:  # a classifier built for another number of classes
            raise IncompatibleError(
                f"model '{name}' outputs {out.shape[1]} class scores per image but data '{data.name}' has "
                f"{data.num_classes} classes; set model.num_classes=${{data.num_classes}}")
        what = "images" if out.ndim == 4 else f"vectors of {tuple(out.shape[1:])}"
        raise IncompatibleError(
            f"model '{name}' is not a classifier: it outputs {what} per image (shape {tuple(out.shape[1:])}), not "
            f"{data.num_classes} class scores, and has no num_classes setting. Train it with the task it was made "
            f"for: task=autoencoder (or denoising_autoencoder, sparse_autoencoder) for an autoencoder, task=siamese or "
            f"task=triplet for an embedding network; to classify with it, use model=encoder_classifier or "
            f"model=embedding_classifier")

    def _step(self, batch, stage: str, metric):
        x, y = batch
        target = y
        if stage == "train" and self.mixing():
            x, target = self.mix(x, y)   # soft labels (N, classes)
            y = target.argmax(1)         # the dominant label, for train/acc
        logits = self(x)
        loss = F.cross_entropy(logits, target, label_smoothing=self.hparams.label_smoothing)
        metric.update(logits.detach(), y)  # logged per epoch only: forward()'s per-batch value would be wasted work
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True,
                 batch_size=len(y), sync_dist=stage != "train")
        self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True, prog_bar=stage != "train")
        return loss, logits

    def mixing(self) -> bool:
        """Whether this training epoch's batches are mixed (``mix_stop_epoch``: the first epoch, 0-based, without)."""
        stop = self.hparams.get("mix_stop_epoch")
        return self.mix is not None and (stop is None or self.current_epoch < stop)

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train", self.train_acc)[0]

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx):
        _, logits = self._step(batch, "test", self.test_acc)
        if self.num_classes > 5:
            self.test_top5.update(logits, batch[1])
            self.log("test/top5", self.test_top5, on_step=False, on_epoch=True)

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0):
        x, y = batch
        return self(x), y
