"""What labkit's logger adapters share: a missing package is a :class:`MissingExtraError` that says what to
``pip install``; a tracking server that goes away during the run does not stop or slow it (:class:`_ServerLogging`:
the first failed call is one warning, later calls are not attempted but counted, and the finalized logger says how
many did not reach the server); :func:`close` ends a logger opened again after training."""
from __future__ import annotations

import importlib.util
import logging
from collections import Counter
from typing import Any, Callable

from pytorch_lightning.loggers import MLFlowLogger as _PLMLFlowLogger
from pytorch_lightning.loggers import WandbLogger as _PLWandbLogger

from labkit.adapters import lightning as lightning_internals
from labkit.core.errors import LabkitError
from labkit.core.servers import server_error, shown
from labkit.loggers.sqlite import retry_locked

log = logging.getLogger("labkit")



class MissingExtraError(LabkitError, ImportError):
    """An optional package is not installed."""


def _count(n: int, what: str) -> str:
    return f"{n} {what if n != 1 else what.rstrip('s').replace('batche', 'batch')}"


class _ServerLogging:
    """Calls to a tracking server that may go away: the first failure is one warning, later calls are skipped and
    counted (no call waits for a server that is gone), and :meth:`_report_unsent` says at finalize what did not
    reach it. Nothing is caught for a local store (``_server`` None)."""

    _server: str | None = None
    _busy_timeout_s: float | None = None  # a local SQLite store: seconds a call waits for another writer's lock
    _what: str = "logger"
    _failure: BaseException | None = None
    _unsent: Counter
    _reported: Counter

    def _check_server(self, url: str, timeout: float) -> None:
        """The server answers within ``timeout`` seconds, else its one-paragraph error (:mod:`labkit.core.servers`)."""
        error = server_error(self._what, url, timeout)
        if error is not None:
            raise error

    def _tolerate(self, what: str, server: str | None) -> None:
        self._what, self._server = what, shown(server) if server else None
        self._failure, self._unsent, self._reported = None, Counter(), Counter()

    def _failed(self, e: BaseException) -> None:
        if self._failure is not None:
            return
        self._failure = e
        log.warning("%s: logging to %s failed (%s). Training goes on without it: no further calls are made to it, "
                    "the run's own records (metrics.json, history.csv, TensorBoard and CSV logs) stay complete, and "
                    "what did not reach the server is counted at the end.", self._what, self._server, _reason(e))

    def _send(self, kind: str | None, fn: Callable, *args: Any, **kwargs: Any) -> None:
        """``fn(*args, **kwargs)`` unless the server has failed; a call not made (or failed) counts as ``kind``
        (None: not counted)."""
        if self._server is None:  # a local store (MLflow's SQLite file): another writer's lock is waited out
            retry_locked(lambda: fn(*args, **kwargs), self._busy_timeout_s)
            return
        if self._failure is None:
            try:
                fn(*args, **kwargs)
            except Exception as e:  # any failure of a remote server's client: counted, warned once, the run goes on
                self._failed(e)
            if self._failure is None:
                return
        if kind:
            self._unsent[kind] += 1

    def _report_unsent(self) -> None:
        if self._server is None or self._unsent == self._reported:
            return
        counts = [_count(n, kind) for kind, n in self._unsent.items()]
        counts = ", ".join(counts[:-1]) + " and " + counts[-1] if len(counts) > 1 else counts[0]
        in_all = "in all, " if self._reported else ""
        self._reported = Counter(self._unsent)
        log.warning("%s: %s%s did not reach %s (it stopped answering); this run's figures are complete in its own "
                    "records (metrics.json, history.csv, TensorBoard and CSV logs).", self._what, in_all, counts,
                    self._server)


_REASONS = (("refused", "connection refused"), ("timed out", "no answer in time"), ("timeout", "no answer in time"),
            ("reset by peer", "connection reset"), ("name or service not known", "unknown host"),
            ("nodename nor servname", "unknown host"), ("remotedisconnected", "connection closed without an answer"))


def _reason(e: BaseException) -> str:
    """A failed call in a few words: the network's reason when the (long) message names one."""
    text = " ".join(str(e).split())
    low = text.lower()
    for needle, reason in _REASONS:
        if needle in low:
            return f"{type(e).__name__}: {reason}"
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def _require(module: str, what: str) -> None:
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules (tests) or a broken install
        found = False
    if not found:
        raise MissingExtraError(f"{what} needs the '{module}' package, which is not installed: pip install {module} "
                                f"(or pip install 'labkit[{module}]'), or choose another logger, e.g. "
                                f"logger=tensorboard")


def _best_model_only(lg, log_model: bool | str) -> bool | str:
    """``log_model``: true (default) = the best model at the end of training (an MLflow model with its signature, a W&B
    ``model`` artifact: :func:`labkit.run.pictures.log_best_model`), not Lightning's copy of every checkpoint file;
    ``"all"`` = that too, each checkpoint as it is saved (Lightning's); false = neither (the schema's check refused any
    other value). Returns Lightning's setting."""
    lg.log_best_model = bool(log_model)
    return "all" if log_model == "all" else False



def _param(d: Any) -> Any:
    """A logged parameter's value: lists become strings; values longer than 250 characters are cut."""
    v = d if isinstance(d, (int, float, bool, str)) or d is None else str(d)
    return v[:250] if isinstance(v, str) else v


def close(lg) -> None:
    """Finish a logger that :func:`reopen` opened: files flushed, W&B's run finished. MLflow's run is left as it is
    (its status stays what training set; a run still training goes on)."""
    if isinstance(lg, _PLMLFlowLogger):
        if isinstance(lg, _ServerLogging):
            lg._report_unsent()
        return
    lg.finalize("success")
    run = lightning_internals.wandb_run_if_started(lg) if isinstance(lg, _PLWandbLogger) else None
    if run is not None:
        run.finish()
