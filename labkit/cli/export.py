"""``export(cfg)``: a finished run's network as ONNX, TorchScript or a torch.export program, ready to ship.

The exported model takes **pixels in [0, 1]**, shape ``(N, C, H, W)`` at the network's input size: the run's input
normalization (its data module's mean/std) is folded in. Autoencoders also give their reconstruction back as 0-1
pixels; classifiers give logits (softmax them for probabilities); embedding networks give ``(N, D)`` embeddings.

Before it reports success the exported file is loaded back (onnxruntime for ONNX) and run on a batch of the run's
own test images, and its outputs are compared with PyTorch's on the same images through the run's own pipeline.
Files go to ``<run>/export/``: ``model.onnx`` | ``model.torchscript.pt`` | ``model.pt2``, each with its own record
``<format>.json`` (paths relative to the run, input/output shapes, classes, the check's figures).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from labkit.core import checks, files
from labkit.core.errors import ConfigError, LabkitError
from labkit.run import directory as runs

log = logging.getLogger("labkit")

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt", "pt2": "model.pt2"}


class MissingExtraError(LabkitError, ImportError):
    """An optional dependency (``pip install 'labkit[export]'``) is not installed."""


class ExportMismatchError(LabkitError, RuntimeError):
    """The exported model's outputs differ from PyTorch's."""


class PixelModel(torch.nn.Module):
    """The run's network with its input normalization folded in: 0-1 pixels in, the task's output out."""

    def __init__(self, net: torch.nn.Module, mean, std, kind: str):
        super().__init__()
        self.net = net
        self.kind = kind
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.net((pixels - self.mean) / self.std)
        if self.kind == "embedding":
            return out.flatten(1)
        if self.kind == "autoencoder":
            return out * self.std + self.mean
        return out


def task_kind(task) -> str:
    from labkit.cli.predict import _kind

    return _kind(task)


def pixel_model(task, data) -> PixelModel:
    if data.mean is None or data.std is None:
        raise ConfigError(f"the run's data module '{data.name}' has no normalization statistics (data.mean/std) "
                          "to fold into the exported model")
    return PixelModel(task.model, data.mean, data.std, task_kind(task)).eval()


def require(*modules: str, feature: str) -> None:
    """Import ``modules`` or raise :class:`MissingExtraError` saying what to install."""
    import importlib

    missing = []
    for m in modules:
        try:
            importlib.import_module(m)
        except ImportError:
            missing.append(m)
    if missing:
        raise MissingExtraError(
            f"{feature} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            f"pip install 'labkit[export]' (or pip install {' '.join(missing)}). format=torchscript and "
            f"format=pt2 need nothing beyond PyTorch.")


def check_batch(task, data, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(0-1 pixels at the network's input size, PyTorch's reference output) on up to ``n`` test images, the
    reference computed through the run's own evaluation pipeline (its normalized batches)."""
    xs, got = [], 0
    for x, _ in data.loader("test"):
        xs.append(data.transform(x, train=False).float().contiguous())
        got += len(xs[-1])
        if got >= n:
            break
    if not xs:
        raise LabkitError(f"the run's test split ({data.name}) is empty: there is no batch to check the export on")
    xn = torch.cat(xs)[:n]
    mean = torch.as_tensor(data.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.as_tensor(data.std, dtype=torch.float32).view(1, -1, 1, 1)
    pixels = (xn * std + mean).contiguous()
    kind = task_kind(task)
    with torch.no_grad():
        ref = task.embed(xn) if kind == "embedding" else task.model(xn)
        if kind == "autoencoder":
            ref = ref * std + mean
    return pixels, ref.float()


def _export_onnx(model: PixelModel, example: torch.Tensor, path: Path, opset: int | None) -> dict[str, Any]:
    require("onnx", "onnxruntime", "onnxscript", feature="format=onnx")
    batch = torch.export.Dim("batch", min=1)
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > 1_500_000_000
    kwargs = {"opset_version": opset} if opset else {}
    # an opset the exporter cannot write: it says so with a traceback (onnxscript) and writes its own; told below
    quiet = [logging.getLogger(name) for name in ("onnxscript", "torch.onnx")] if opset else []
    levels = [lg.level for lg in quiet]
    try:
        for lg in quiet:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the exporter's own internals, not the user's model
            torch.onnx.export(model, (example,), str(path), input_names=["pixels"], output_names=["output"],
                              dynamic_shapes=({0: batch},), external_data=big, verbose=False, **kwargs)
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)
    written = _onnx_opset(path)
    if opset and written != opset:
        path.unlink(missing_ok=True)
        raise ConfigError(
            f"opset={opset} is not available: torch {torch.__version__}'s ONNX exporter wrote opset {written} and "
            f"could not convert this network to {opset}, so no file was written. Use opset=null (the exporter's "
            f"default, {written}) or an opset it can convert to (usually {written} or close below it)")
    return {"opset": written}


def _onnx_opset(path: Path) -> int | None:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)


def _run_onnx(path: Path, pixels: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: its graph-optimizer notes are not the user's concern
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    return session.run(None, {"pixels": pixels.numpy()})[0]


def _export_torchscript(model: PixelModel, example: torch.Tensor, path: Path) -> dict[str, Any]:
    with warnings.catch_warnings():
        # torch.jit is deprecated in favour of torch.export (format=pt2) but still what many deployments load
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=FutureWarning)
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(path))
    return {}


def _run_torchscript(path: Path, pixels: torch.Tensor) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=FutureWarning)
        m = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return m(pixels).numpy()


def _export_pt2(model: PixelModel, example: torch.Tensor, path: Path) -> dict[str, Any]:
    ep = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(ep, str(path))
    return {}


def _run_pt2(path: Path, pixels: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.export.load(str(path)).module()(pixels).numpy()


def how_to_load(fmt: str, path: Path, shape: tuple, out_shape: tuple, kind: str) -> str:
    c, h, w = shape
    what = {"classification": "logits (softmax them for probabilities; class names in <format>.json)",
            "embedding": "embeddings", "autoencoder": "reconstructions as 0-1 pixels"}[kind]
    head = (f"input: float32 pixels in [0, 1], shape (N, {c}, {h}, {w}) (normalization is folded in); "
            f"output: {what}, shape (N, {', '.join(map(str, out_shape[1:]))})\nload it:\n")
    if fmt == "onnx":
        return head + (f"  import onnxruntime as ort\n  session = ort.InferenceSession(\"{path}\")\n"
                       f"  output = session.run(None, {{\"pixels\": images}})[0]   "
                       f"# images: float32 numpy array (N, {c}, {h}, {w})")
    if fmt == "torchscript":
        # torch.jit.load always warns (a FutureWarning in torch 2.14) and Python has no warning-free TorchScript
        # loader: the snippet silences exactly that warning and names the format torch recommends instead
        return head + (f"  import torch, warnings\n"
                       f"  with warnings.catch_warnings():   # TorchScript is deprecated: torch.jit.load warns\n"
                       f"      warnings.filterwarnings(\"ignore\", message=\"`torch.jit.load`\", "
                       f"category=FutureWarning)\n"
                       f"      model = torch.jit.load(\"{path}\")\n"
                       f"  output = model(images)   # images: float32 tensor (N, {c}, {h}, {w})\n"
                       f"TorchScript is deprecated in PyTorch (C++'s torch::jit::load reads this file as it is); "
                       f"torch recommends torch.export instead: format=pt2, loaded with torch.export.load")
    return head + (f"  import torch\n  model = torch.export.load(\"{path}\").module()\n"
                   f"  output = model(images)   # images: float32 tensor (N, {c}, {h}, {w})")


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.run`` as ``cfg.format``; returns its record ``export/<format>.json`` (paths relative to the run,
    shapes, check figures), with ``path`` absolute for the caller."""
    from labkit.cli.evaluate import load_run

    fmt = str(cfg.get("format", "onnx")).lower()
    if fmt not in FORMATS:
        raise ConfigError(f"format={cfg.get('format')!r} is invalid: choose one of {', '.join(FORMATS)}")
    n = checks.positive_int("check_images", cfg.get("check_images", 64))
    checks.positive_int("opset", cfg.get("opset"), optional=True, hint="the ONNX operator set to write; null: the "
                        "exporter's default")
    if fmt == "onnx":  # before loading anything: say what to install at once
        require("onnx", "onnxruntime", "onnxscript", feature="format=onnx")
    run_dir = runs.resolve_run(cfg.run)[0]
    saved, task, data, ckpt = load_run(cfg.run, cfg.get("ckpt", "best"), cfg.get("data_dir"), cfg.get("batch_size"))
    task.eval().cpu()
    model = pixel_model(task, data)
    pixels, ref = check_batch(task, data, n)
    out_dir = Path(cfg.get("out_dir") or Path(run_dir) / "export")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FORMATS[fmt]
    tmp = path.with_name(f".tmp.{path.name}")  # same extension: exporters look at it
    example = pixels[: min(2, len(pixels))]
    extra = {"onnx": lambda: _export_onnx(model, example, tmp, cfg.get("opset")),
             "torchscript": lambda: _export_torchscript(model, example, tmp),
             "pt2": lambda: _export_pt2(model, example, tmp)}[fmt]()
    tmp.replace(path)  # the check below loads the final file, as a user would
    got = {"onnx": _run_onnx, "torchscript": _run_torchscript, "pt2": _run_pt2}[fmt](path, pixels)
    ref_np = ref.numpy()
    diff = float(np.abs(got - ref_np).max()) if got.shape == ref_np.shape else float("inf")
    tol = float(cfg.get("atol", 1e-4)) + float(cfg.get("rtol", 1e-3)) * float(np.abs(ref_np).max())
    kind = task_kind(task)
    record = {"format": fmt, "path": runs.relative_to_run(path, run_dir), "run": Path(run_dir).resolve().name,
              "checkpoint": runs.relative_to_run(ckpt, run_dir), "kind": kind,
              "input": {"name": "pixels", "shape": ["N", *pixels.shape[1:]], "range": [0.0, 1.0],
                        "folded_mean": list(data.mean), "folded_std": list(data.std)},
              "output": {"name": "output", "shape": ["N", *ref.shape[1:]]},
              "classes": list(data.classes) if kind == "classification" else None,
              "check": {"images": len(pixels), "max_abs_difference": diff, "tolerance": tol}, **extra}
    if got.shape != ref_np.shape or not diff <= tol:
        raise ExportMismatchError(
            f"the exported {fmt} model at {path} does not reproduce PyTorch's outputs on {len(pixels)} test images "
            f"of the run (shapes {tuple(got.shape)} vs {tuple(ref_np.shape)}, max |difference| {diff:.3g} > "
            f"tolerance {tol:.3g}): the network uses an operation the exporter does not translate faithfully; "
            f"try another format (format=onnx|torchscript|pt2) or loosen atol/rtol if the difference is rounding")
    files.write_json(out_dir / f"{fmt}.json", record)  # one record per format: exporting another keeps this one
    print(f"exported {run_dir.name} to {path}")
    print(how_to_load(fmt, path, tuple(pixels.shape[1:]), tuple(ref.shape), kind))
    print(f"checked against PyTorch on {len(pixels)} test images of the run: max |difference| = {diff:.2g} "
          f"(tolerance {tol:.2g})")
    return {**record, "path": str(path)}


# ----- the command: python export.py, labkit-export ---------------------------------------------------------------
