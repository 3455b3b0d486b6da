"""Experiment trackers beyond TensorBoard/CSV: MLflow and Weights & Biases (``logger=mlflow|wandb|many``).

- :class:`MLFlowLogger`: Lightning's, with a local SQLite store under ``paths.log_dir/mlruns`` by default (MLflow 3
  refuses plain-folder stores), its folder created, relative paths made absolute, and the run named after the run
  directory; ``mlflow ui --backend-store-uri sqlite:///<log_dir>/mlruns/mlflow.db`` shows every run. Parallel jobs
  share that file safely: its tables and the experiment are made under a lock (:func:`prepare_sqlite_store`), and a
  write that finds the database locked by another job waits and retries (``busy_timeout_s``, :func:`retry_locked`).
- :class:`WandbLogger`: Lightning's, offline by default (conf/logger/wandb.yaml), named after the run directory.
- :class:`CSVLogger`: Lightning's, but it continues ``metrics.csv`` on resume (Lightning's deletes it, so a resumed
  run would lose the curves of its first epochs).
- :class:`RunSummary`: a callback that sends the whole composed config (``config/...`` parameters) and the run's
  final figures (best monitored value, parameters, epochs, test error) to every logger of the trainer.

A missing package is a :class:`MissingExtraError` that says what to ``pip install``.

:func:`reopen` opens a finished run's loggers again (evaluate.py adds its headline figures to the same TensorBoard
folder, CSV file, MLflow run and W&B run); :func:`close` ends what it opened.

Tracking servers (a remote MLflow ``tracking_uri``, online W&B) are checked when the logger is built, before any
training, with a short timeout (``connect_timeout_s``): one that does not answer is a :class:`TrackingServerError`,
one paragraph naming the address and the ways out, never minutes of retries. A server that goes away during the run
does not stop or slow it: the first failed call is one warning, later calls are not attempted but counted, and when
the logger is finalized it says how many did not reach the server (:class:`_ServerLogging`); the run's own records
(metrics.json, history.csv, TensorBoard, CSV) do not depend on it.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import random
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger as _CSVLogger
from pytorch_lightning.loggers import MLFlowLogger as _PLMLFlowLogger
from pytorch_lightning.loggers import WandbLogger as _PLWandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import DummyExperiment
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from labkit.adapters import lightning as lightning_internals
from labkit.adapters import wandb as wandb_internals
from labkit.core import console
from labkit.core.errors import ConfigError, LabkitError
from labkit.core.servers import CONNECT_TIMEOUT_S, TrackingServerError, mlflow_server_error, probe, shown
from labkit.core.values import flatten

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows: the SQLite store is not locked while it is made)
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("labkit")

# a local SQLite store written by parallel jobs: seconds a write waits for another process's lock before it fails
SQLITE_BUSY_TIMEOUT_S = 60.0
# MLflow's own HTTP settings for a remote server unless the user set them: MLflow retries 7 times with a back-off
# factor of 2 and waits 120 s per request by default, minutes per call once a server is gone
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class MissingExtraError(LabkitError, ImportError):
    """An optional package is not installed."""


def _check_timeout(key: str, value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{key}={value!r} is invalid: give the seconds to wait for the tracking server before "
                          f"training (a number > 0, default {CONNECT_TIMEOUT_S:g}), or null to skip the check")
    return float(value)


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
            except Exception as e:
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


def _local_uri(path: str) -> str:
    return Path(path).expanduser().resolve().as_uri()


def _best_model_only(lg, log_model: bool | str) -> bool | str:
    """``log_model``: true (default) = the best model at the end of training (an MLflow model with its signature, a W&B
    ``model`` artifact: :func:`labkit.run.pictures.log_best_model`), not Lightning's copy of every checkpoint file;
    ``"all"`` = that too, each checkpoint as it is saved (Lightning's); false = neither. Returns Lightning's setting."""
    if log_model not in (True, False, "all"):
        raise ConfigError(f"log_model={log_model!r} is invalid: true (the best model at the end of training), false, "
                          f"or 'all' (also every checkpoint file as it is saved)")
    lg.log_best_model = bool(log_model)
    return "all" if log_model == "all" else False


def _remote(uri: str | None) -> bool:
    return bool(uri) and uri.split("://", 1)[0].lower() in ("http", "https")


# ----- a local SQLite store shared by parallel writers (sweep jobs on several workers, runs beside each other) -------
def sqlite_store(uri: str, busy_timeout_s: float | None) -> tuple[str, Path]:
    """A ``sqlite:///<file>[?options]`` URI with its file made absolute (its folder created) and SQLite's busy timeout
    ``timeout=<busy_timeout_s>`` added unless the URI sets one (SQLAlchemy hands it to every connection: the schema
    checks and migrations MLflow runs outside its sessions wait for another writer instead of failing after
    sqlite3's default 5 s); returns the URI and the database file."""
    path, _, query = uri[len("sqlite:///"):].partition("?")
    db = Path(path).expanduser().resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    options = urllib.parse.parse_qsl(query, keep_blank_values=True)
    if busy_timeout_s is not None and not any(key == "timeout" for key, _ in options):
        options.append(("timeout", f"{busy_timeout_s:g}"))
    query = urllib.parse.urlencode(options)
    return "sqlite:///" + str(db) + (f"?{query}" if query else ""), db


def _check_busy_timeout(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"logger.mlflow.busy_timeout_s={value!r} is invalid: give the seconds a write to the SQLite "
                          f"store waits for another process's lock (a number > 0, default "
                          f"{SQLITE_BUSY_TIMEOUT_S:g}), or null to fail at once")
    return float(value)


def _locked(e: BaseException) -> bool:
    """``e`` says SQLite's database (or a table) is locked by another connection (MLflow wraps SQLAlchemy's
    OperationalError, which wraps sqlite3's: the text is what they share)."""
    text = str(e).lower()
    return "database is locked" in text or "database table is locked" in text


def retry_locked(fn: Callable[[], Any], timeout_s: float | None) -> Any:
    """``fn()``, called again (back-off 0.05 s doubling to 2 s) while it fails because another process holds the SQLite
    database's lock, for up to ``timeout_s`` seconds; then, or on any other error, the error is raised. SQLite's own
    busy timeout does not cover every case: a transaction that read before it writes is refused at once when another
    writer is ahead of it (waiting could deadlock), and MLflow sets its own 20 s busy timeout in each session. A failed
    call was rolled back, so calling it again writes it once."""
    deadline = time.monotonic() + (timeout_s or 0.0)
    pause = 0.05
    while True:
        try:
            return fn()
        except Exception as e:
            if not _locked(e) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause * (0.5 + random.random()))  # jittered: two waiting writers do not retry in step
        pause = min(pause * 2, 2.0)


@contextlib.contextmanager
def _store_lock(db: Path):
    """An exclusive flock on ``<db>.lock`` beside the SQLite file (the kernel drops it if the process dies); none where
    flock does not exist."""
    if fcntl is None:  # pragma: no cover (Windows)
        yield
        return
    fd = os.open(db.with_name(db.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # (releases the lock)


def prepare_sqlite_store(uri: str, db: Path, experiment_name: str, artifact_location: str | None,
                         busy_timeout_s: float | None) -> None:
    """Make the SQLite store's tables and the experiment, one process at a time. MLflow creates a new database's tables
    by running its migrations on first use, and Lightning's logger creates a missing experiment on first use: two sweep
    jobs starting together each run them (``table _alembic_tmp_metrics already exists``, a half-migrated database that
    every later job fails on; or two experiments of one name refused). Under the store's lock the first process does
    both and the others find them done (MLflow keeps the store per URI and process: later calls do not migrate)."""
    from mlflow.tracking import MlflowClient

    def make() -> None:
        client = MlflowClient(tracking_uri=uri)
        if client.get_experiment_by_name(experiment_name) is None:
            client.create_experiment(experiment_name, artifact_location=artifact_location)

    with _store_lock(db):
        retry_locked(make, busy_timeout_s)


class MLFlowLogger(_ServerLogging, _PLMLFlowLogger):
    """Lightning's MLFlowLogger. Extra: ``run_dir`` (tagged, and the run's name when ``run_name`` is null); a remote
    ``tracking_uri`` (http/https) is checked first (``connect_timeout_s``, null: no check), MLflow's HTTP retries and
    timeout are bounded (:data:`MLFLOW_HTTP_DEFAULTS`, unless set in the environment), and a server that goes away
    during the run is tolerated (:class:`_ServerLogging`). A SQLite store (``sqlite:///<file>``) is made by one process
    at a time, and its writes wait out other processes' locks for up to ``busy_timeout_s`` seconds."""

    def __init__(self, experiment_name: str = "labkit", run_name: str | None = None,
                 tracking_uri: str | None = None, artifact_location: str | None = None, run_dir: str | None = None,
                 tags: dict[str, Any] | None = None, connect_timeout_s: float | None = CONNECT_TIMEOUT_S,
                 log_model: bool | str = True, busy_timeout_s: float | None = SQLITE_BUSY_TIMEOUT_S, **kwargs: Any):
        _require("mlflow", "logger=mlflow")
        kwargs["log_model"] = _best_model_only(self, log_model)
        timeout = _check_timeout("logger.mlflow.connect_timeout_s", connect_timeout_s)
        self._tolerate("mlflow", tracking_uri if _remote(tracking_uri) else None)
        if self._server is not None:
            for key, value in MLFLOW_HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)
            if timeout is not None:
                self._check_server(tracking_uri, timeout)
        self._busy_timeout_s = _check_busy_timeout(busy_timeout_s)
        self._sqlite: Path | None = None
        if tracking_uri and tracking_uri.startswith("sqlite:///"):
            tracking_uri, self._sqlite = sqlite_store(tracking_uri, self._busy_timeout_s)
        elif tracking_uri and "://" not in tracking_uri and not tracking_uri.startswith("file:"):
            tracking_uri = _local_uri(tracking_uri)  # a folder: MLflow's file store (set MLFLOW_ALLOW_FILE_STORE)
        if artifact_location and "://" not in artifact_location and not artifact_location.startswith("file:"):
            artifact_location = _local_uri(artifact_location)
        tags = dict(tags or {})
        if run_dir:
            tags.setdefault("run_dir", str(Path(run_dir).resolve()))
            run_name = run_name or Path(run_dir).name
        self._experiment_named = experiment_name
        self.tracking_uri = tracking_uri  # (Lightning keeps it private; figures and models are sent to the same store)
        self._uploads_checkpoints = bool(kwargs.get("log_model", False))  # Lightning's MLFlowLogger: default False
        if self._sqlite is not None:  # the store's tables and the experiment, made by one process at a time
            prepare_sqlite_store(tracking_uri, self._sqlite, experiment_name, artifact_location, self._busy_timeout_s)
        super().__init__(experiment_name=experiment_name, run_name=run_name, tracking_uri=tracking_uri,
                         artifact_location=artifact_location, tags=tags or None, **kwargs)

    def continue_run(self, run_id: str | None) -> str | None:
        """Log into an existing run instead of a new one: ``run_id``, else the newest run of the experiment tagged
        with this logger's run directory (runs trained before labkit recorded the id); returns the id, None when
        there is no such run."""
        if run_id is None:
            run_dir = (self.tags or {}).get("run_dir")
            client = lightning_internals.mlflow_client(self)
            exp = client.get_experiment_by_name(self._experiment_named) if run_dir else None
            found = client.search_runs(
                [exp.experiment_id], filter_string=f"tags.run_dir = {_quoted(run_dir)}",
                order_by=["attributes.start_time DESC"], max_results=1) if exp is not None else []
            run_id = found[0].info.run_id if found else None
        lightning_internals.mlflow_use_run(self, run_id)
        return run_id

    @staticmethod
    def _check_server(uri: str, timeout: float) -> None:
        error = mlflow_server_error(uri, timeout)
        if error is not None:
            raise error

    # every call that reaches the server, tolerated (_ServerLogging): the run is created on first use
    @property
    def experiment(self):
        if self._server is None:  # a local store: the run is created now, waiting out another writer's lock
            return retry_locked(lambda: super(MLFlowLogger, self).experiment, self._busy_timeout_s)
        if self._failure is None:
            try:
                return super().experiment
            except Exception as e:
                self._failed(e)
        return DummyExperiment()  # swallows every call; _send counts them

    def log_hyperparams(self, params: Any) -> None:
        self._send("parameter sets", super().log_hyperparams, self._new_params(params))

    def _new_params(self, params: Any) -> Any:
        """A continued run (a resume: ``run_id`` given) gets only the params it does not hold yet: MLflow refuses to
        change a logged param, and what a resume changed is in the run's config.yaml (``resume_history``)."""
        run_id = lightning_internals.mlflow_run_id(self)
        if run_id is None or self._server is not None and self._failure is not None:
            return params
        try:
            held = lightning_internals.mlflow_client(self).get_run(run_id).data.params
        except Exception:  # noqa: BLE001  (the run cannot be read: Lightning's own call says why)
            return params
        from omegaconf import OmegaConf

        plain = vars(params) if hasattr(params, "__dict__") and not isinstance(params, dict) else params
        if OmegaConf.is_config(plain):
            plain = OmegaConf.to_container(plain, resolve=True)
        flat = flatten(dict(plain or {}), "/", _param)  # (only the keys are compared)
        return {k: v for k, v in flat.items() if k[:250] not in held}

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        self._send("metric batches", super().log_metrics, metrics, step)

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        # an upload only with log_model (Lightning's MLFlowLogger sends nothing otherwise)
        self._send("checkpoint uploads" if self._uploads_checkpoints else None, super().after_save_checkpoint,
                   checkpoint_callback)

    def finalize(self, status: str = "success") -> None:
        self._send(None, super().finalize, status)  # the run's end status: not sent once the server is gone
        self._report_unsent()


def _quoted(value: str) -> str:
    """A string as MLflow's search filter reads it."""
    return f'"{value}"' if "'" in value else f"'{value}'"


def _wandb_base_url(init: dict) -> str:
    settings = init.get("settings")
    url = settings.get("base_url") if isinstance(settings, dict) else getattr(settings, "base_url", None)
    if url:
        return str(url)
    try:  # wandb's own resolution: WANDB_BASE_URL, `wandb login --host`'s settings file; starts no process
        return wandb_internals.base_url()
    except Exception:
        return os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"


class WandbLogger(_ServerLogging, _PLWandbLogger):
    """Lightning's WandbLogger, offline unless told otherwise; ``name`` null = the run directory's name. Online
    (``offline: false``), W&B's server is checked first (``connect_timeout_s``, null: no check) and calls that fail
    later are tolerated (:class:`_ServerLogging`). When output is plain (:func:`labkit.core.console.plain`: a log
    file, a scheduler), W&B writes nothing to the console (``silent``: its lines carry colour codes even in files);
    labkit says where the run is saved instead."""

    def __init__(self, name: str | None = None, save_dir: str = ".", offline: bool = True,
                 connect_timeout_s: float | None = CONNECT_TIMEOUT_S, log_model: bool | str = True, **kwargs: Any):
        _require("wandb", "logger=wandb")
        kwargs["log_model"] = _best_model_only(self, log_model)
        timeout = _check_timeout("logger.wandb.connect_timeout_s", connect_timeout_s)
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(name=name or Path(save_dir).name, save_dir=save_dir, offline=offline, **kwargs)
        init = lightning_internals.wandb_init_kwargs(self)  # what wandb.init will get
        if init.get("anonymous") is None:  # Lightning always passes it; wandb >= 0.19 warns it is unused
            init.pop("anonymous", None)
        mode = str(init.get("mode") or os.environ.get("WANDB_MODE") or "online").lower()
        online = not offline and mode not in ("offline", "disabled", "dryrun")
        base_url = _wandb_base_url(init) if online else None
        self._tolerate("wandb", base_url)
        if base_url is not None and timeout is not None:
            self._check_server(base_url, timeout)

    @staticmethod
    def _check_server(url: str, timeout: float) -> None:
        started = time.monotonic()
        why = probe(url, timeout)
        if why is None:
            return
        raise TrackingServerError(
            f"logger=wandb with logger.wandb.offline=false cannot reach the W&B server at {shown(url)}: {why} (after "
            f"{time.monotonic() - started:.1f} s; labkit waits up to logger.wandb.connect_timeout_s={timeout:g} s). "
            "Nothing was trained. "
            "Ways out: check the network or the server's address (WANDB_BASE_URL, wandb login --host=...); log "
            "offline with logger.wandb.offline=true (the default: the run is saved in <run dir>/wandb, upload it "
            "later with wandb sync <run dir>/wandb/offline-run-*); or log with logger=tensorboard")

    @property
    def experiment(self):
        announce = (lightning_internals.wandb_run_if_started(self) is None and rank_zero_only.rank == 0
                    and console.plain() and self._quiet_console())
        if self._server is not None and self._failure is not None:
            return DummyExperiment()
        try:
            run = super().experiment
        except Exception as e:
            if self._server is None:
                raise
            self._failed(e)
            return DummyExperiment()
        if announce:
            self._announce(run)
        return run

    def _quiet_console(self) -> bool:
        """W&B writes nothing to the console (its lines, the exit summary included, carry colour codes even in a
        file); True when this logger is the one to say where the run is instead."""
        if getattr(self, "_quieted", False):
            return False
        self._quieted = True
        init = lightning_internals.wandb_init_kwargs(self)
        settings = init.get("settings")
        if settings is None:
            init["settings"] = {"silent": True}
        elif isinstance(settings, dict):
            settings.setdefault("silent", True)
        else:
            return False  # the user's own wandb.Settings: theirs to choose
        return True

    def _announce(self, run: Any) -> None:
        files = getattr(run, "dir", None)
        where = Path(files).parent if files else Path(self.save_dir or ".") / "wandb"
        if self._server is None:
            log.info("wandb: offline run saved in %s; upload it with: wandb sync %s", where, where)
        else:
            log.info("wandb: run %s (files in %s)", getattr(run, "url", None) or "", where)

    def log_hyperparams(self, params: Any) -> None:
        self._send("parameter sets", super().log_hyperparams, params)

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        self._send("metric batches", super().log_metrics, metrics, step)

    def finalize(self, status: str) -> None:
        self._send(None, super().finalize, status)
        self._report_unsent()


# ----- a finished run's loggers, opened again -------------------------------------------------------------------
def _wandb_run_id(save_dir) -> str | None:
    """The id of the newest W&B run saved under ``<save_dir>/wandb`` (``offline-run-<time>-<id>``, ``run-<time>-<id>``)."""
    runs = sorted(Path(save_dir, "wandb").glob("*run-*-*"), key=lambda p: p.name.split("run-", 1)[-1])
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


def reopen(run_dir, cfg) -> list:
    """The loggers a run was trained with (``cfg.logger`` of its config.yaml), opened again to add figures to the same
    records: TensorBoard's folder and the CSV file of the run, its MLflow run (the id its provenance.json records,
    else the newest MLflow run tagged with the run directory) and its W&B run (resumed by id; offline, a new piece
    that ``wandb sync`` merges). A logger that cannot be opened (package missing, tracking server down, run not
    found) is a warning and is left out: what the caller wrote is kept whatever the loggers do."""
    from hydra.utils import get_class, instantiate
    from omegaconf import DictConfig

    from labkit.run import directory

    recorded: dict[str, str] = {}
    for session in directory.read_provenance(run_dir).get("sessions") or []:
        recorded.update(session.get("loggers") or {})  # the last session that finished names the run of its figures
    out = []
    for key, node in (cfg.get("logger") or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        try:
            cls = get_class(str(node._target_))
            extra = {}
            if issubclass(cls, _PLWandbLogger):
                run_id = recorded.get(cls.__name__) or _wandb_run_id(node.get("save_dir") or run_dir)
                if run_id is None:
                    raise LookupError(f"no W&B run under {node.get('save_dir') or run_dir}/wandb")
                extra = {"id": run_id}
            lg = instantiate(node, **extra)
            if isinstance(lg, MLFlowLogger) and lg.continue_run(recorded.get(cls.__name__)) is None:
                raise LookupError(f"no MLflow run of experiment {node.get('experiment_name')!r} is tagged "
                                  f"run_dir={Path(run_dir).resolve()}")
            out.append(lg)
        except Exception as e:
            what = e.__cause__ if e.__cause__ is not None and "instantiat" in type(e).__name__.lower() else e
            log.warning("logger.%s: could not open the run's %s logger again (%s): its figures stay in the run's own "
                        "records only", key, key, _reason(what))
    return out


def send_pictures(run_dir, cfg, pictures: dict[str, Path], step: int = 0, what: str = "figures") -> dict[str, int]:
    """``pictures`` (``{"predictions/<time>/predictions.png": path}``) to the loggers the run ``run_dir`` was trained
    with (``cfg``: its config.yaml), opened again with :func:`reopen` and closed after: TensorBoard images, artifacts
    of its MLflow run, W&B images (:func:`labkit.run.pictures.send_figures`). Returns how many each logger got; a
    logger that cannot be opened or reached is a warning, the files stay in the run directory whatever happens."""
    from labkit.run.pictures import send_figures

    if not pictures or not cfg.get("logger"):
        return {}
    loggers = reopen(run_dir, cfg)
    sent: dict[str, int] = {}
    try:
        sent = send_figures(loggers, pictures, step=step)
    except Exception as e:
        log.warning("could not send the %s to the run's loggers (%s); they stay in %s", what, _reason(e), run_dir)
    finally:
        for lg in loggers:
            try:
                close(lg)
            except Exception as e:
                log.warning("could not close the %s logger: %s", type(lg).__name__, _reason(e))
    if any(sent.values()):
        log.info("the run's loggers got the %s: %s", what, ", ".join(
            f"{n} to {name.removesuffix('Logger')}" for name, n in sent.items()))
    return sent


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


def _param(d: Any) -> Any:
    """A logged parameter's value: lists become strings; values longer than 250 characters are cut."""
    v = d if isinstance(d, (int, float, bool, str)) or d is None else str(d)
    return v[:250] if isinstance(v, str) else v


class RunSummary(pl.Callback):
    """Send the composed config and the final figures to every logger of the trainer.

    The config is read from ``<run>/config.yaml`` (written by ``train()`` before the trainer is built) and logged as
    parameters under ``config/``; at the end of fit the best monitored value, the parameter counts and the epochs,
    and after the test the test error, are logged as metrics. Nothing happens without a logger.
    """

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.loggers or not trainer.is_global_zero:
            return
        run_dir = Path(trainer.default_root_dir)
        from labkit.run import directory

        if not directory.is_run_dir(run_dir):
            return
        from omegaconf import OmegaConf

        # the settings as they apply to this run (interpolations resolved: a logger may re-parse strings, and a
        # cut "${paths.output_dir}" is no valid interpolation); the resume history is a record, not a setting
        config = OmegaConf.to_container(directory.load_config(run_dir), resolve=True)
        config.pop("resume_history", None)
        params = flatten({"config": config}, "/", _param)
        for lg in trainer.loggers:
            lg.log_hyperparams(params)

    def _log(self, trainer: pl.Trainer, metrics: dict[str, float]) -> None:
        if not trainer.loggers or not trainer.is_global_zero or not metrics:
            return
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=trainer.global_step)
            lg.save()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from labkit.models._shape import count_parameters

        model = getattr(pl_module, "model", pl_module)
        final = {"final/params": float(count_parameters(model)),
                 "final/trainable_params": float(count_parameters(model, trainable_only=True)),
                 "final/epochs": float(trainer.current_epoch)}
        for cb in trainer.checkpoint_callbacks:
            if getattr(cb, "monitor", None) and cb.best_model_score is not None:
                final[f"final/best_{cb.monitor}"] = float(cb.best_model_score)
        self._log(trainer, final)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        m = {f"final/{k}": float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        if "final/test/acc" in m:
            m["final/test/error"] = 1.0 - m["final/test/acc"]  # a fraction, like the accuracy
        self._log(trainer, m)


class CSVLogger(_CSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` that continues ``metrics.csv`` on resume instead of deleting it."""

    @property
    @rank_zero_only
    def experiment(self) -> ExperimentWriter:
        return lightning_internals.appending_csv_experiment(self)
