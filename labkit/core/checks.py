"""labkit's one validation vocabulary: every value check of a config key or constructor argument goes through here.

Each function takes the key's full name (``data.batch_size``) and the value, returns the value when it is valid
and raises :class:`~labkit.core.errors.ConfigError` otherwise, always in the same shape::

    data.batch_size=0 is invalid: it must be a positive integer

``optional=True`` also accepts ``None``. Booleans are never numbers here (``True`` is not a batch size).

A class declares the checks of its own constructor arguments once, in its schema's static ``check(args)``
(:mod:`labkit.schemas`, no torch there) that reads a mapping of argument name -> value; the class makes it its
``check_args`` and its ``__init__`` calls it with ``locals()`` (before doing any work), and the pre-flight
(``labkit.run.validate.validate`` through :mod:`labkit.run.signatures`) runs the same checks on the config without
importing the class.
"""
from __future__ import annotations

import difflib
import inspect
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from labkit.core.errors import ConfigError

__all__ = ["invalid", "positive_int", "non_negative_int", "integer", "positive", "non_negative", "number",
           "fraction", "in_range", "per_channel", "one_of", "count_or_fraction", "did_you_mean", "unknown_key",
           "writable_folder", "locate", "target_arguments"]


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def invalid(name: str, value: Any, must: str, hint: str = "", suggestion: str = "") -> ConfigError:
    """The error (to raise) for ``name=value``: ``"<name>=<value> is invalid: it must be <must>"``, then the hint
    (after ``;``, or as a sentence of its own when it starts with a capital) and a suggestion (``Did you mean``)."""
    text = f"{name}={_show(value)} is invalid: it must be {must}"
    if hint:
        text += (". " if hint[0].isupper() else "; ") + hint
    if suggestion:
        text += ". " + suggestion
    return ConfigError(text)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


is_int = _is_int  # (public: a schema's rule may need it)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))


def _require(name: str, value: Any, ok: Callable[[Any], bool], must: str, optional: bool, hint: str):
    """``value`` when ``ok(value)`` (or when it is None and ``optional``); else :func:`invalid` saying it ``must``."""
    if value is None and optional:
        return value
    if not ok(value):
        raise invalid(name, value, must, hint)
    return value


def integer(name: str, value: Any, minimum: int | None = None, *, optional: bool = False, hint: str = ""):
    """An integer, ``>= minimum`` when given."""
    return _require(name, value, lambda v: _is_int(v) and (minimum is None or v >= minimum),
                    "an integer" + (f" >= {minimum}" if minimum is not None else ""), optional, hint)


def positive_int(name: str, value: Any, *, optional: bool = False, hint: str = ""):
    """An integer > 0."""
    return _require(name, value, lambda v: _is_int(v) and v > 0, "a positive integer", optional, hint)


def non_negative_int(name: str, value: Any, *, optional: bool = False, hint: str = ""):
    """An integer >= 0."""
    return _require(name, value, lambda v: _is_int(v) and v >= 0, "an integer >= 0", optional, hint)


def number(name: str, value: Any, *, optional: bool = False, hint: str = ""):
    """Any finite or infinite number (not NaN, not a bool)."""
    return _require(name, value, _is_num, "a number", optional, hint)


def positive(name: str, value: Any, *, optional: bool = False, hint: str = ""):
    """A number > 0."""
    return _require(name, value, lambda v: _is_num(v) and v > 0, "a number > 0", optional, hint)


def non_negative(name: str, value: Any, *, optional: bool = False, hint: str = ""):
    """A number >= 0."""
    return _require(name, value, lambda v: _is_num(v) and v >= 0, "a number >= 0", optional, hint)


def in_range(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False,
             optional: bool = False, hint: str = ""):
    """A number in the interval ``[lo, hi]`` (``(`` / ``)`` where open)."""
    return _require(name, value,
                    lambda v: _is_num(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi),
                    f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}", optional, hint)


def fraction(name: str, value: Any, *, optional: bool = False, hint: str = ""):
    """A number in [0, 1] (a probability)."""
    return in_range(name, value, 0.0, 1.0, optional=optional, hint=hint)


def count_or_fraction(name: str, value: Any, *, whole: bool = False, optional: bool = False, hint: str = ""):
    """A count (integer >= 0) or a fraction (a float in [0, 1), or [0, 1] with ``whole``), e.g. a hold-out size."""
    if value is None and optional:
        return value
    if _is_int(value) and value >= 0:
        return value
    if isinstance(value, float) and 0.0 <= value and (value <= 1.0 if whole else value < 1.0):
        return value
    raise invalid(name, value, f"a fraction in [0, 1{']' if whole else ')'} or a count (an integer >= 0)", hint)


def per_channel(name: str, value: Any, channels: int, *, above: float | None = None, optional: bool = False):
    """A list of numbers, one per image channel (``data.mean``/``data.std``), each ``> above`` when given."""
    if value is None and optional:
        return value
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not all(_is_num(v) for v in value):
        raise invalid(name, value, f"a list of numbers, one per channel (data.channels={channels})")
    if len(value) != channels:
        raise invalid(name, value, f"a list of one number per channel (data.channels={channels}), but {name} has "
                                   f"{len(value)} values")
    if above is not None and any(v <= above for v in value):
        raise invalid(name, value, f"a list of numbers > {above:g}")
    return value


def one_of(name: str, value: Any, choices: Iterable[Any], *, hint: str = ""):
    """One of ``choices`` (``None`` counts as the word null); suggests the closest choice for a misspelt string."""
    choices = list(choices)
    if value in choices:
        return value
    words = ["null" if c is None else str(c) for c in choices]
    close = did_you_mean(str(value), [w for w in words if w != "null"]) if isinstance(value, str) else ""
    raise invalid(name, value, "one of " + ", ".join(words), hint, close)


def boolean(name: str, value: Any, *, hint: str = ""):
    """``true`` or ``false`` (a real boolean: not 1, not the string "yes")."""
    return _require(name, value, lambda v: isinstance(v, bool), "true or false", False, hint)


def did_you_mean(word: str, candidates: Iterable[str], prefix: str = "") -> str:
    """``"Did you mean '<prefix><closest>'?"`` or an empty string when nothing is close."""
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"Did you mean '{prefix}{close[0]}'?" if close else ""


def unknown_key(path: str, key: str, valid: Iterable[str], what: str = "") -> ConfigError:
    """The error for a key that does not exist: ``unknown key 'trainer.max_epoch' ... Did you mean ...?``.

    One shape for a misspelt override with and without ``+`` and for keys the target does not accept.
    """
    valid = sorted(set(valid))
    full = f"{path}.{key}" if path else key
    hint = did_you_mean(key, valid, f"{path}." if path else "")
    where = f" {what}" if what else (f" '{path}' has no key '{key}'." if path else " there is no such top-level key.")
    listing = f" Valid keys{f' of {path}' if path else ''}: {', '.join(valid)}" if valid else ""
    return ConfigError(f"unknown key '{full}':{where}{' ' + hint if hint else ''}{listing}")


def writable_folder(name: str, path: Any) -> Path:
    """A folder that exists and is writable, or can be created: checked without creating anything."""
    p = Path(str(path)).expanduser().absolute()
    q = p
    while not q.exists() and q != q.parent:
        q = q.parent
    if not q.is_dir():
        raise ConfigError(f"{name}={path} is invalid: {q} is a file, not a folder, so nothing can be written "
                          f"{'in' if q == p else 'below'} it. Choose a folder, e.g. {name}=logs")
    if not os.access(q, os.W_OK | os.X_OK):
        raise ConfigError(f"{name}={path} is invalid: you cannot write in {q} (permission denied). Choose a "
                          "writable folder")
    return p


# ----- argument checks declared by classes ------------------------------------------------------------------
class _Silent(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


def locate(target: str):
    """The class or function a ``_target_`` names, found as Hydra's ``instantiate`` finds it (ConfigError when it
    cannot be imported)."""
    from hydra.utils import get_object

    hydra_log, silent = logging.getLogger("hydra.utils"), _Silent()
    hydra_log.addFilter(silent)  # get_object logs the error before raising it: labkit says it in one paragraph
    try:
        return get_object(target)
    except Exception as e:
        raise ConfigError(f"_target_ '{target}' cannot be imported: {e}") from None
    finally:
        hydra_log.removeFilter(silent)


def target_arguments(cls: type, given: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments ``cls(**given)`` would see in every ``__init__`` of its hierarchy: the defaults of
    each level, overridden by ``given``."""
    args: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        init = vars(klass).get("__init__")
        if init is None or klass is object:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        for p in params:
            if p.default is not p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                args[p.name] = p.default
    args.update(given)
    return args
