"""Safe reading of checkpoints and weight files: always ``torch.load(weights_only=True)``."""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from labkit.errors import LabkitError


class UnsafeCheckpointError(LabkitError):
    """A file would need arbitrary code (pickled objects) to load, or is not a checkpoint at all."""


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{path} cannot be loaded safely: it contains pickled Python objects beyond tensors and plain data "
            f"({str(e).splitlines()[0][:200]}). labkit only reads weights_only checkpoints; nothing was executed. "
            "Re-save the weights as a state_dict if you trust the file.") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise UnsafeCheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): "
                                    f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(obj, dict):
        raise UnsafeCheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint or state_dict")
    return obj


def state_dict_of(obj: dict) -> dict[str, torch.Tensor]:
    """The network weights in a Lightning checkpoint (``model.`` prefix removed) or a plain state_dict."""
    sd = obj.get("state_dict", obj)
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if any(k.startswith("model.") for k in sd):
        sd = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
    return {k.replace("_orig_mod.", ""): v for k, v in sd.items()}
