"""Autoencoder tasks of note 003: plain, denoising and sparse reconstruction with MSE.

The network is any model with ``encode(x)`` and ``decode(code)`` whose output has the input's shape
(``labkit.models.autoencoders``). Each task logs ``{train,val,test}/loss`` plus its terms
(``/mse``, and ``/sparsity`` for the sparse task) and, each validation epoch, image grids of the
first validation batch (inputs, noisy inputs where used, reconstructions) to TensorBoard.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from labkit.core.errors import IncompatibleError
from labkit.models.build import model_name
from labkit.schemas import tasks as schema
from labkit.tasks.base import LabTask, probe_output
from labkit.tasks.logging import FirstBatch, log_image_grids

# fixed seed of the noise drawn at validation/test time, so that val/loss is comparable across epochs
EVAL_NOISE_SEED = 1234


class AutoencoderTask(LabTask):
    """Reconstruct the input: ``loss = MSE(decode(encode(x)), x)`` (mean over pixels and batch).

    Args:
        log_images: number of validation images shown in the TensorBoard grids (0 disables them).
    """

    monitor = ("val/loss", "min")
    logged_metrics = schema.AutoencoderTask.logged_metrics
    evaluations = ("representation", "compression", "anomaly")
    reconstructs = True  # LabTask.encode/decode give the network's: predict.py's reconstructions, compression, anomaly
    # what sweep summaries and compare.py show first (labkit.tracking.summary): the test reconstruction loss
    headline_metrics = ("test/loss",)
    loss_kind = "MSE"

    def __init__(self, model, log_images: int = 50, **kwargs: Any):
        AutoencoderTask.check_args(locals())
        super().__init__(model, **kwargs)
        self.save_hyperparameters({"log_images": log_images})
        self._first_val = FirstBatch()
        self._eval_gen: torch.Generator | None = None

    # the rules of this class's own arguments (run by __init__ and, on the config, by the pre-flight)
    check_args = staticmethod(schema.AutoencoderTask.check)

    # ----- what the variants change --------------------------------------------------------------
    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The network's input made from the clean batch ``x`` (identity here)."""
        return x

    def loss_terms(self, x: torch.Tensor, x_in: torch.Tensor, code: torch.Tensor,
                   recon: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named terms summed into the loss: here only ``mse`` between reconstruction and clean input."""
        return {"mse": F.mse_loss(recon, x)}

    # ----- shared machinery -----------------------------------------------------------------------
    def compute(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, Any]:
        """One forward pass: ``{"loss", "terms", "input", "code", "recon"}``."""
        x_in = self.corrupt(x, generator)
        code = self.model.encode(x_in)
        recon = self.model.decode(code)
        terms = self.loss_terms(x, x_in, code, recon)
        loss = torch.stack(list(terms.values())).sum()
        return {"loss": loss, "terms": terms, "input": x_in, "code": code, "recon": recon}

    def check_compatible(self, data) -> None:
        super().check_compatible(data)
        name = model_name(self.hparams.model)
        task = type(self).__name__
        if not (callable(getattr(self.model, "encode", None)) and callable(getattr(self.model, "decode", None))):
            raise IncompatibleError(
                f"task {task} needs an autoencoder, a model with encode(x) and decode(code) whose output has the "
                f"input's shape, but model '{name}' is not one (it has no encode/decode). Choose "
                f"model=conv_autoencoder or model=mlp_autoencoder, or task=classification for '{name}'.")
        out = probe_output(self.model, data.input_shape, name)
        if tuple(out.shape[1:]) != tuple(data.input_shape):
            raise IncompatibleError(
                f"task {task} needs the reconstruction to have the input's shape {tuple(data.input_shape)}, but "
                f"model '{name}' outputs {tuple(out.shape[1:])} on data '{data.name}'")

    def _eval_generator(self, x: torch.Tensor) -> torch.Generator:
        if self._eval_gen is None or self._eval_gen.device != x.device:
            self._eval_gen = torch.Generator(device=x.device).manual_seed(EVAL_NOISE_SEED)
        return self._eval_gen

    def on_validation_epoch_start(self) -> None:
        self._eval_gen = None

    def on_test_epoch_start(self) -> None:
        self._eval_gen = None

    def _step(self, batch, stage: str) -> dict[str, Any]:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        out = self.compute(x, None if stage == "train" else self._eval_generator(x))
        n = len(x)
        self.log(f"{stage}/loss", out["loss"], on_step=stage == "train", on_epoch=True, prog_bar=True, batch_size=n)
        for k, v in out["terms"].items():
            self.log(f"{stage}/{k}", v, on_step=False, on_epoch=True, batch_size=n)
        return out

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")["loss"]

    def validation_step(self, batch, batch_idx):
        out = self._step(batch, "val")
        n = self.hparams.log_images
        if batch_idx == 0 and n:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            grid = {"inputs": x[:n]}
            if out["input"] is not x:
                grid["noisy_inputs"] = out["input"][:n]
            grid["reconstructions"] = out["recon"][:n]
            self._first_val.keep(self, **grid)

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0):
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.model(x)

    # ----- TensorBoard image grids ----------------------------------------------------------------
    def on_validation_epoch_end(self) -> None:
        grid = self._first_val.take()
        if grid is not None:
            log_image_grids(self, grid)


class DenoisingAutoencoderTask(AutoencoderTask):
    """Denoising autoencoder: the input is ``x + noise_factor * N(0, 1)`` and, with ``target="clean"``
    (default, the standard definition), the loss compares the reconstruction with the CLEAN ``x``.

    Note 003 adds the same Gaussian noise (factor 0.5) but computes ``MSE(perturbed, reconstructed)``,
    i.e. it asks the network to reproduce the *noisy* input; ``target="noisy"`` reproduces that.
    Noise is also added at validation/test time (as in the note), drawn from a fixed seed there so the
    validation loss of different epochs is measured on the same noise. Codes for evaluation are
    always computed from clean inputs.
    """

    def __init__(self, model, noise_factor: float = 0.5, target: str = "clean", **kwargs: Any):
        DenoisingAutoencoderTask.check_args(locals())
        super().__init__(model, **kwargs)
        self.save_hyperparameters({"noise_factor": float(noise_factor), "target": target})

    # the rules of this class's own arguments (run by __init__ and, on the config, by the pre-flight)
    check_args = staticmethod(schema.DenoisingAutoencoderTask.check)

    def corrupt(self, x, generator=None):
        if generator is None:
            noise = torch.randn_like(x)
        else:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + noise * self.hparams.noise_factor

    def loss_terms(self, x, x_in, code, recon):
        return {"mse": F.mse_loss(recon, x if self.hparams.target == "clean" else x_in)}


class SparseAutoencoderTask(AutoencoderTask):
    """Sparse autoencoder: ``loss = MSE(recon, x) + beta * L1(code - s)``.

    Note 003 writes the penalty as ``beta * sum_i |z_i - s|`` over the N code units but implements it
    with ``nn.L1Loss()``, whose default reduction is the MEAN over every code element of the batch;
    ``reduction="mean"`` (default) follows that code, ``reduction="sum"`` follows the formula (sum over
    the code units, mean over the batch). Defaults s = 0.05, beta = 0.5 as in the note.
    """

    logged_metrics = schema.SparseAutoencoderTask.logged_metrics

    def __init__(self, model, sparsity: float = 0.05, beta: float = 0.5, reduction: str = "mean", **kwargs: Any):
        SparseAutoencoderTask.check_args(locals())
        super().__init__(model, **kwargs)
        self.save_hyperparameters({"sparsity": float(sparsity), "beta": float(beta), "reduction": reduction})

    # the rules of this class's own arguments (run by __init__ and, on the config, by the pre-flight)
    check_args = staticmethod(schema.SparseAutoencoderTask.check)

    def sparsity_penalty(self, code: torch.Tensor) -> torch.Tensor:
        """``beta * |code - s|`` reduced by ``reduction``."""
        dev = (code - self.hparams.sparsity).abs()
        red = dev.mean() if self.hparams.reduction == "mean" else dev.flatten(1).sum(1).mean()
        return self.hparams.beta * red

    def loss_terms(self, x, x_in, code, recon):
        return {"mse": F.mse_loss(recon, x), "sparsity": self.sparsity_penalty(code)}
