"""MLflow (``logger=mlflow``): :class:`MLFlowLogger`, Lightning's, with a local SQLite store under
``paths.log_dir/mlruns`` by default (MLflow 3 refuses plain-folder stores), its folder created, relative paths made
absolute, and the run named after the run directory; ``mlflow ui --backend-store-uri
sqlite:///<log_dir>/mlruns/mlflow.db`` shows every run. A remote tracking server is checked when the logger is built,
with a short timeout (``connect_timeout_s``)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import MLFlowLogger as _PLMLFlowLogger
from pytorch_lightning.loggers.logger import DummyExperiment

from labkit.adapters import lightning as lightning_internals
from labkit.core.servers import CONNECT_TIMEOUT_S
from labkit.core.values import flatten
from labkit.loggers.base import _best_model_only, _param, _require, _ServerLogging
from labkit.loggers.sqlite import prepare_sqlite_store, retry_locked, sqlite_store
from labkit.schemas import loggers as schema
from labkit.schemas.loggers import SQLITE_BUSY_TIMEOUT_S

log = logging.getLogger("labkit")

# MLflow's own HTTP settings for a remote server unless the user set them: MLflow retries 7 times with a back-off
# factor of 2 and waits 120 s per request by default, minutes per call once a server is gone
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def _local_uri(path: str) -> str:
    return Path(path).expanduser().resolve().as_uri()


def _remote(uri: str | None) -> bool:
    return bool(uri) and uri.split("://", 1)[0].lower() in ("http", "https")


def _quoted(value: str) -> str:
    """A string as MLflow's search filter reads it."""
    return f'"{value}"' if "'" in value else f"'{value}'"


class MLFlowLogger(_ServerLogging, _PLMLFlowLogger):
    """Lightning's MLFlowLogger. Extra: ``run_dir`` (tagged, and the run's name when ``run_name`` is null); a remote
    ``tracking_uri`` (http/https) is checked first (``connect_timeout_s``, null: no check), MLflow's HTTP retries and
    timeout are bounded (:data:`MLFLOW_HTTP_DEFAULTS`, unless set in the environment), and a server that goes away
    during the run is tolerated (:class:`_ServerLogging`). A SQLite store (``sqlite:///<file>``) is made by one process
    at a time, and its writes wait out other processes' locks for up to ``busy_timeout_s`` seconds."""

    check_args = staticmethod(schema.MLFlowLogger.check)  # the schema's rules: timeouts, log_model

    def __init__(self, experiment_name: str = "labkit", run_name: str | None = None,
                 tracking_uri: str | None = None, artifact_location: str | None = None, run_dir: str | None = None,
                 tags: dict[str, Any] | None = None, connect_timeout_s: float | None = CONNECT_TIMEOUT_S,
                 log_model: bool | str = True, busy_timeout_s: float | None = SQLITE_BUSY_TIMEOUT_S, **kwargs: Any):
        MLFlowLogger.check_args(locals())
        _require("mlflow", "logger=mlflow")
        kwargs["log_model"] = _best_model_only(self, log_model)
        timeout = None if connect_timeout_s is None else float(connect_timeout_s)
        self._tolerate("mlflow", tracking_uri if _remote(tracking_uri) else None)
        if self._server is not None:
            for key, value in MLFLOW_HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)
            if timeout is not None:
                self._check_server(tracking_uri, timeout)
        self._busy_timeout_s = None if busy_timeout_s is None else float(busy_timeout_s)
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

    # every call that reaches the server, tolerated (_ServerLogging): the run is created on first use
    @property
    def experiment(self):
        if self._server is None:  # a local store: the run is created now, waiting out another writer's lock
            return retry_locked(lambda: super(MLFlowLogger, self).experiment, self._busy_timeout_s)
        if self._failure is None:
            try:
                return super().experiment
            except Exception as e:  # any failure of the server's client: the run goes on, its calls are counted
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
