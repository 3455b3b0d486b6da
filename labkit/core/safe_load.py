"""Safe reading of files labkit is pointed at: nothing in a data or checkpoint file ever runs code.

- Checkpoints and weight files: always ``torch.load(weights_only=True)`` (:func:`load_checkpoint`).
- Other pickles (CIFAR batches and meta files): :func:`safe_unpickle`, a restricted unpickler that admits only
  plain data (dicts, lists, tuples, sets, strings, bytes, numbers) and numpy arrays/scalars, and refuses any other
  Python global before it is looked up, so nothing is imported or executed.
- :class:`CorruptFileError` is the error for a data file that is truncated or not in its format, naming the file.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from labkit.adapters.numpy import pickled_core_global
from labkit.adapters.torch import COMPILED_PREFIX
from labkit.core.errors import LabkitError


class UnsafeFileError(LabkitError, ValueError):
    """A file would need arbitrary code (pickled objects beyond plain data) to load; nothing was executed."""


class UnsafeCheckpointError(UnsafeFileError):
    """A file would need arbitrary code (pickled objects) to load, or is not a checkpoint at all."""


class CorruptFileError(LabkitError, ValueError):
    """A data file is truncated, empty or not in the format labkit expects (the message names the file)."""


class CheckpointNotFoundError(LabkitError, FileNotFoundError):
    """A checkpoint or weight file does not exist."""


# ----- restricted unpickling -------------------------------------------------------------------------
# (module, name) of the only globals a CIFAR batch/meta pickle needs: numpy's array and scalar reconstruction
# (both module spellings: numpy < 2 writes numpy.core, numpy >= 2 numpy._core) and the bytes helper that
# protocol-2 pickles of Python 3 bytes use. None of them runs code from the file.
_NUMPY_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype")}
for _core in ("numpy.core", "numpy._core"):
    # _frombuffer: how protocol-5 pickles rebuild arrays (frombuffer + reshape)
    _NUMPY_GLOBALS |= {(f"{_core}.multiarray", "_reconstruct"), (f"{_core}.multiarray", "scalar"),
                       (f"{_core}.numeric", "_frombuffer")}
SAFE_GLOBALS = frozenset(_NUMPY_GLOBALS | {("_codecs", "encode")})
_SAFE_BUILTINS = frozenset({"set", "frozenset", "bytearray", "complex"})  # protocol-2 spellings of plain data


class _Refused(pickle.UnpicklingError):
    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in SAFE_GLOBALS and not (module in ("builtins", "__builtin__")
                                                        and name in _SAFE_BUILTINS):
            raise _Refused(module, name)
        found = pickled_core_global(module, name)  # numpy >= 2 moved numpy.core: not through the deprecated alias
        return found if found is not None else super().find_class(module, name)


def safe_unpickle(path: str | Path, what: str = "a pickle of plain data and numpy arrays", encoding: str = "latin1"):
    """The object pickled in ``path``, if it is made only of plain data and numpy arrays.

    A pickle that refers to any other Python global (a class, a function such as ``os.system``) raises
    :class:`UnsafeFileError` before that global is even imported; a file that is not a pickle at all (or is
    truncated) raises :class:`CorruptFileError`. Both name the file; ``what`` says what it should have been.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding=encoding).load()
    except _Refused as e:
        raise UnsafeFileError(
            f"{path} cannot be loaded safely: it is expected to be {what}, but it refers to the Python object "
            f"{e.qualname}, which could run code when loaded. labkit refused it; nothing was executed. Replace the "
            "file with a genuine copy (or re-download it).") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            UnicodeDecodeError, MemoryError, OverflowError, RecursionError) as e:
        detail = "empty file" if path.stat().st_size == 0 else f"{type(e).__name__}: {_first_line(e)}"
        raise CorruptFileError(f"{path} is not {what}: it does not unpickle ({detail}). The file is truncated or "
                               "corrupt: replace it with a genuine copy (or re-download it).") from None


def _first_line(e: BaseException) -> str:
    s = str(e)
    return (s.splitlines()[0] if s else "")[:200]


# ----- checkpoints -----------------------------------------------------------------------------------
def _looks_like_torch_file(path: Path) -> bool:
    """True when the file starts like a zip archive (torch.save's format, even if truncated) or a binary pickle
    stream (the legacy format and plain pickles)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head == b"PK\x03\x04" or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _unsafe_checkpoint(path: Path, e: BaseException) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"{path} cannot be loaded safely: it contains pickled Python objects beyond tensors and plain data "
        f"({_first_line(e)}). labkit only reads weights_only checkpoints; nothing was executed. "
        "Re-save the weights as a state_dict if you trust the file.")


def refuse_unsafe_weights(path: str | Path) -> None:
    """Raise :class:`UnsafeCheckpointError` when ``path`` is a PyTorch file whose pickle needs more than tensors
    and plain data; any other problem is left to the caller's loader. For files that third-party code then loads
    with ``weights_only=False`` (torchvision's cached ImageNet weights)."""
    path = Path(path)
    try:
        if not _looks_like_torch_file(path):
            return
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _unsafe_checkpoint(path, e) from None
    except Exception:  # unreadable for another reason: the caller's own loader reports it
        return


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"checkpoint {path} does not exist: give a .ckpt file of a labkit run "
                                      "(logs/runs/<run>/checkpoints/*.ckpt) or a PyTorch .pt/.pth state_dict")
    if path.is_dir():
        raise UnsafeCheckpointError(f"{path} is a folder, not a checkpoint: give a .ckpt file (e.g. "
                                    f"{path}/checkpoints/last.ckpt) or a PyTorch .pt/.pth state_dict")
    if path.stat().st_size == 0 or not _looks_like_torch_file(path):
        what = "an empty file" if path.stat().st_size == 0 else "neither a zip archive nor a pickle"
        raise UnsafeCheckpointError(
            f"{path} is not a checkpoint (a PyTorch .ckpt/.pt file): it is {what}. Give a .ckpt file of a labkit "
            "run (logs/runs/<run>/checkpoints/*.ckpt) or a state_dict saved with torch.save; nothing was executed.")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise _unsafe_checkpoint(path, e) from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise UnsafeCheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): "
                                    f"{type(e).__name__}: {_first_line(e)}") from None
    if not isinstance(obj, dict):
        raise UnsafeCheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint or state_dict")
    return obj


def state_dict_of(obj: dict) -> dict[str, torch.Tensor]:
    """The network weights in a Lightning checkpoint (``model.`` prefix removed) or a plain state_dict."""
    sd = obj.get("state_dict", obj)
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if any(k.startswith("model.") for k in sd):
        sd = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
    return {k.replace(COMPILED_PREFIX, ""): v for k, v in sd.items()}
