"""Every figure a run writes, and its best model, in every tracking UI the run logs to.

labkit draws its figures as PNG files in the run directory (``learning_curves.png``, ``lr_finder.png`` during
training; ``evaluation/<split>/*.png`` from evaluate.py; ``predictions/<time>/predictions.png`` from predict.py;
``search/optuna_*.png``, a search's plots, in its best trial's run: :func:`labkit.tracking.reopen.send_pictures`).
:func:`send_figures` gives each one to the run's loggers as well, under a folder per report and split:

- TensorBoard: an image (Images tab), tag ``evaluation/test/confusion_matrix``;
- MLflow: an artifact of the run's own MLflow run, ``evaluation/test/confusion_matrix.png``;
- W&B: a ``wandb.Image`` under the same key.

:func:`log_best_model`, at the end of training: MLflow gets the best checkpoint's network as an MLflow model
(``mlflow.pytorch.log_model`` with its input signature and an input example: a batch as the network sees it, after
the data module's normalisation), which ``mlflow.pytorch.load_model``, the model registry and ``mlflow models serve``
use; W&B gets the best checkpoint as a ``model`` artifact (alias ``best``). Each logger's ``log_model`` (default
true) turns this off.

The loggers are told apart by their class names (this layer does not import the tracking layer); a logger that fails
(a server that went away) is one warning, and the run's own files are kept whatever the loggers do.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("labkit")

TRAINING_FOLDER = "training"  # where the figures written during training go in each tracking UI


def _kind(lg) -> str | None:
    for cls in type(lg).__mro__:
        name = cls.__name__
        if name in ("TensorBoardLogger", "MLFlowLogger", "WandbLogger"):
            return name
    return None


def _tolerant(lg, what: str, fn, *args, **kwargs) -> bool:
    """``fn(*args)`` through the logger's own tolerance of a server that went away (labkit's MLflow and W&B loggers:
    one warning, later calls skipped and counted), else with one warning on failure. True when it was sent."""
    send = getattr(lg, "_send", None)
    if callable(send) and getattr(lg, "_server", None) is not None:
        if getattr(lg, "_failure", None) is not None:
            send(what, lambda: None)  # counted, not attempted
            return False
        send(what, fn, *args, **kwargs)
        return getattr(lg, "_failure", None) is None
    try:
        fn(*args, **kwargs)
        return True
    except Exception as e:  # any logger's failure: the picture stays in the run directory
        log.warning("%s: could not send %s (%s: %s); it stays in the run directory", type(lg).__name__, what,
                    type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
        return False


def _rgb(path: Path):
    """A PNG as an (H, W, 3) uint8 array."""
    import matplotlib.image
    import numpy as np

    img = matplotlib.image.imread(str(path))
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return img[..., :3]


def figures_in(folder: Path, prefix: str, recursive: bool = False) -> dict[str, Path]:
    """``{"<prefix>/<name>.png": path}`` for the PNG files of ``folder`` (and its sub-folders when ``recursive``)."""
    folder = Path(folder)
    found = sorted(folder.rglob("*.png") if recursive else folder.glob("*.png"))
    return {f"{prefix}/{p.relative_to(folder).as_posix()}": p for p in found if p.is_file()}


def send_figures(loggers, figures: dict[str, Path], step: int = 0) -> dict[str, int]:
    """Each figure (``{"evaluation/test/confusion_matrix.png": path}``) to each logger that shows images; returns how
    many each logger got (by class name)."""
    sent: dict[str, int] = {}
    if not figures:
        return sent
    for lg in loggers:
        kind = _kind(lg)
        if kind is None:
            continue
        n = 0
        for key, path in figures.items():
            path = Path(path)
            if not path.is_file():
                continue
            tag = key[:-len(".png")] if key.endswith(".png") else key
            if kind == "TensorBoardLogger":
                ok = _tolerant(lg, "figures", _tensorboard_image, lg, tag, path, step)
            elif kind == "MLFlowLogger":
                ok = _tolerant(lg, "figures", _mlflow_artifact, lg, key, path)
            else:
                ok = _tolerant(lg, "figures", _wandb_image, lg, tag, path)
            n += bool(ok)
        if kind == "TensorBoardLogger" and n:
            _tolerant(lg, "figures", lg.experiment.flush)
        sent[type(lg).__name__] = n
    return sent


def _tensorboard_image(lg, tag: str, path: Path, step: int) -> None:
    lg.experiment.add_image(tag, _rgb(path), global_step=step, dataformats="HWC")


def _mlflow_artifact(lg, key: str, path: Path) -> None:
    folder = Path(key).parent.as_posix()
    lg.experiment.log_artifact(lg.run_id, str(path), artifact_path=None if folder in ("", ".") else folder)


def _wandb_image(lg, tag: str, path: Path) -> None:
    import wandb

    lg.experiment.log({tag: wandb.Image(str(path), caption=path.name)})


# ----- the best model -----------------------------------------------------------------------------------------------
def _example(task, data):
    """(network on the CPU in eval mode, an input batch of two as the network sees it) or (network, None)."""
    import copy

    import torch

    net = copy.deepcopy(task.model).cpu().eval()
    try:
        x, _ = next(iter(data.loader("test")))
        x = data.transform(x[:2].cpu(), False) if hasattr(data, "transform") else x[:2]
        return net, x.float()
    except Exception as e:  # no test split: the model goes without an example
        log.info("log_model: no input example (%s)", e)
        return net, None
    finally:
        torch.set_grad_enabled(True)


def _best_weights(task, ckpt: str | Path | None) -> None:
    """The best checkpoint's weights in the task (a run with test=false still holds its last epoch's)."""
    if not ckpt or not Path(ckpt).is_file():
        return
    import torch

    try:
        state = torch.load(str(ckpt), map_location="cpu", weights_only=True)["state_dict"]
        task.load_state_dict(state, strict=False)
    except Exception as e:  # a checkpoint this network cannot take: it logs the weights as trained
        log.info("log_model: the network as trained, not %s (%s)", ckpt, e)


def log_best_model(loggers, task, data, ckpt: str | Path | None, name: str = "model") -> dict[str, str]:
    """The best model to MLflow (an MLflow model) and W&B (a ``model`` artifact): see the module's docstring.
    Returns {logger class: where it went}."""
    wanted = [lg for lg in loggers if _kind(lg) in ("MLFlowLogger", "WandbLogger")
              and getattr(lg, "log_best_model", False)]
    if not wanted:
        return {}
    _best_weights(task, ckpt)
    net, x = _example(task, data)
    out: dict[str, str] = {}
    for lg in wanted:
        if _kind(lg) == "MLFlowLogger":
            uri: list[str] = []
            if _tolerant(lg, "models", _mlflow_model, lg, net, x, name, uri):
                out[type(lg).__name__] = uri[0] if uri else f"runs:/{lg.run_id}/{name}"
        elif ckpt and Path(ckpt).is_file() and _tolerant(lg, "models", _wandb_model, lg, Path(ckpt)):
            out[type(lg).__name__] = f"artifact model-{lg.experiment.id}:best"
    for where in out.values():
        log.info("best model logged: %s", where)
    return out


def _mlflow_model(lg, net, x, name: str, uri: list[str]) -> None:
    import mlflow
    import mlflow.pytorch
    import torch

    signature = example = None
    if x is not None:
        from mlflow.models import infer_signature

        example = x.numpy()
        with torch.no_grad():
            y = net(x)
        signature = infer_signature(example, y.numpy() if isinstance(y, torch.Tensor) else None)
    before = mlflow.get_tracking_uri()
    run_id = lg.run_id  # the run is created on first use
    mlflow.set_tracking_uri(lg.tracking_uri)
    try:
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(net, name=name, signature=signature, input_example=example,
                                            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
        uri.append(str(info.model_uri))
    finally:
        mlflow.set_tracking_uri(before)


def _wandb_model(lg, ckpt: Path) -> None:
    import wandb

    run = lg.experiment
    art = wandb.Artifact(name=f"model-{run.id}", type="model", metadata={"checkpoint": ckpt.name})
    art.add_file(str(ckpt), name="model.ckpt")
    run.log_artifact(art, aliases=["best", "latest"])


def at_end_of_training(loggers, run_dir: Path, task, data, ckpt: str | Path | None, step: int) -> dict[str, Any]:
    """The figures written during training (``<run>/*.png``: learning curves, the lr finder) and the best model to
    the run's loggers."""
    figures = figures_in(run_dir, TRAINING_FOLDER)
    return {"figures": send_figures(loggers, figures, step), "model": log_best_model(loggers, task, data, ckpt)}
