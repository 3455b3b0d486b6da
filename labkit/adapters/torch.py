"""torch internals labkit needs. Nothing here imports torch: a function works on the objects it is given."""
from __future__ import annotations

from typing import Any, Sequence

# the prefix torch.compile's wrapper puts before every state_dict key of the network it wraps (its attribute below)
COMPILED_PREFIX = "_orig_mod."


def unwrap_compiled(model: Any) -> Any:
    """The network itself when ``model`` is the wrapper ``torch.compile(net)`` returns, else ``model``.

    Why private: the wrapper (``torch._dynamo.eval_frame.OptimizedModule``, itself private) keeps the network in
    ``_orig_mod``, and torch has no public accessor (``nn.Module.compile()`` compiles in place without a wrapper,
    but checkpoints of ``task.compile=true`` runs carry the wrapper's ``_orig_mod.`` key prefix)."""
    return getattr(model, "_orig_mod", model)


def set_last_lr(scheduler: Any, lrs: Sequence[float]) -> None:
    """Make ``scheduler.get_last_lr()`` return ``lrs`` (one per parameter group) before its next ``step()``: after
    labkit changed the optimizer's learning rates and groups itself (the fine-tuning unfreeze).

    Why private: ``get_last_lr()`` returns the list ``step()`` stores in ``_last_lr``; torch has no setter. A
    scheduler without ``_last_lr`` is left alone."""
    if hasattr(scheduler, "_last_lr"):
        scheduler._last_lr = list(lrs)
