"""Hydra (``hydra-core``) internals labkit needs. Nothing here imports Hydra until a function is called."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, NoReturn

# hydra.core.utils._save_config(cfg, filename, output_dir): how Hydra writes <run dir>/.hydra/{config,hydra,overrides}.yaml
_SAVE_CONFIG = "_save_config"


def run_and_report(fn: Callable[[], Any]) -> NoReturn:
    """Call ``fn`` (which raises) and let Hydra report its exception as Hydra reports a failed job: the traceback
    shortened to the user's frames, "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace",
    exit status 1.

    Why private: Hydra's report lives in ``hydra._internal.utils.run_and_report``; no public function gives it."""
    from hydra._internal.utils import run_and_report as report

    report(fn)
    raise SystemExit(1)  # pragma: no cover (Hydra's report exits)


def failed_job_exception(ret: Any) -> BaseException | None:
    """The exception a failed Hydra job (a launcher's ``JobReturn`` whose status is not COMPLETED) raised; None for a
    completed job.

    Why private: ``JobReturn`` keeps it in ``_return_value``; its public ``return_value`` re-raises it (after
    writing "Error executing job with overrides" to stderr) instead of returning it."""
    from hydra.core.utils import JobStatus

    return None if ret.status == JobStatus.COMPLETED else ret._return_value


def file_being_saved(exc: BaseException) -> Path | None:
    """The file Hydra was writing (``<run dir>/.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml``) when ``exc``
    was raised, from the traceback; None when ``exc`` did not come from there (an error of a full disk does not name
    the file).

    Why private: Hydra writes these files in ``hydra.core.utils._save_config(cfg, filename, output_dir)`` and says
    which file failed nowhere else: this reads that frame's ``output_dir`` and ``filename``."""
    tb, found = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_name == _SAVE_CONFIG:
            where, name = tb.tb_frame.f_locals.get("output_dir"), tb.tb_frame.f_locals.get("filename")
            found = Path(str(where)) / str(name) if where is not None and name is not None else None
        tb = tb.tb_next
    return found


@contextmanager
def mode_answered_by(answer: Callable[[list[tuple[str, str]], str | None, list[str]], Any], unknown: Any):
    """While the block runs, Hydra asks ``answer(sources, config_name, overrides)`` for ``hydra.mode`` before it
    composes the whole config to read it; ``sources`` are the search path's config sources as (scheme, path) pairs.
    When ``answer`` returns ``unknown``, Hydra composes as it always does.

    Why private: Hydra reads the mode in ``hydra._internal.hydra.Hydra.get_mode(config_name, overrides)`` by a full
    composition (in MULTIRUN mode) before the run's own, and offers no public way to tell it the mode; its search
    path's sources are ``Hydra.config_loader.get_sources()`` (each with ``scheme()`` and ``path``)."""
    from hydra._internal.hydra import Hydra

    composing = Hydra.get_mode

    def get_mode(self, config_name, overrides):
        try:
            sources = [(s.scheme(), s.path) for s in self.config_loader.get_sources()]
            found = answer(sources, config_name, list(overrides))
        except Exception:  # noqa: BLE001  (any doubt: Hydra's own answer)
            found = unknown
        if found is unknown:
            return composing(self, config_name, overrides)
        from hydra.types import RunMode

        return None if found is None else RunMode[found]

    Hydra.get_mode = get_mode
    try:
        yield
    finally:
        Hydra.get_mode = composing
