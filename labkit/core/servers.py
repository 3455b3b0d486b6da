"""Tracking servers (a remote MLflow ``tracking_uri``, W&B online): is one there, asked once with a short timeout.

Used by the pre-flight (:func:`labkit.run.startup.check_tracking_servers`, before a run's folder exists) and by the
loggers themselves (:mod:`labkit.loggers`, for runs started from the notebook API); standard library only.
"""
from __future__ import annotations

import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from labkit.core.errors import LabkitError

CONNECT_TIMEOUT_S = 5.0


class TrackingServerError(LabkitError):
    """A tracking server (MLflow, W&B) does not answer before training starts."""


def remote(uri: object) -> bool:
    """Whether a tracking URI names a server (http/https), not a local store."""
    return isinstance(uri, str) and bool(uri) and uri.split("://", 1)[0].lower() in ("http", "https")


def probe(url: str, timeout_s: float) -> str | None:
    """None when the HTTP(S) server at ``url`` answers within ``timeout_s`` seconds (any HTTP status counts, and a
    TLS certificate problem too: something is listening), else why not, in a few words. Asks ``url`` itself only
    (``<url>/health``, MLflow's and many servers' cheap page), through the proxies the environment names, like the
    clients do; the whole check, name lookup included, is bounded by ``timeout_s``."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]  # credentials in the URL are the client's business, not the probe's
    target = urllib.parse.urlunsplit((parts.scheme, host, parts.path.rstrip("/") + "/health", "", ""))
    answer: list[str | None] = []

    def ask() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(target, method="GET"), timeout=timeout_s) as r:
                r.read(256)
            answer.append(None)
        except urllib.error.HTTPError:  # 404, 401, 503...: a server answered
            answer.append(None)
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, ssl.SSLError):
                answer.append(None)
            elif isinstance(reason, ConnectionRefusedError):
                answer.append("connection refused")
            elif isinstance(reason, socket.gaierror):
                answer.append(f"unknown host ({reason.strerror or reason})")
            elif isinstance(reason, (TimeoutError, socket.timeout)):
                answer.append(f"no answer within {timeout_s:g} s")
            else:
                answer.append(str(reason))
        except (TimeoutError, socket.timeout):
            answer.append(f"no answer within {timeout_s:g} s")
        except ssl.SSLError:
            answer.append(None)
        except Exception as e:  # a connection closed without an answer, ...
            answer.append(f"{type(e).__name__}: {e}".rstrip(": "))

    thread = threading.Thread(target=ask, name="labkit-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return answer[0] if answer else f"no answer within {timeout_s:g} s"


def shown(url: str) -> str:
    """``url`` as messages show it: a password in it masked."""
    parts = urllib.parse.urlsplit(url)
    user, at, host = parts.netloc.rpartition("@")
    if at and ":" in user:
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{host}"))
    return url


def mlflow_server_error(uri: str, timeout: float) -> TrackingServerError | None:
    """None when the MLflow tracking server at ``uri`` answers within ``timeout`` seconds, else the one-paragraph error
    that names it, why, and the ways out."""
    started = time.monotonic()
    why = probe(uri, timeout)
    if why is None:
        return None
    source = " (from the MLFLOW_TRACKING_URI environment variable)" if os.environ.get("MLFLOW_TRACKING_URI") == uri \
        else ""
    return TrackingServerError(
        f"logger=mlflow cannot reach the MLflow tracking server at {shown(uri)}{source}: {why} (after "
        f"{time.monotonic() - started:.1f} s; labkit waits up to logger.mlflow.connect_timeout_s={timeout:g} s). "
        "Nothing was trained. "
        "Ways out: fix the address (logger.mlflow.tracking_uri=http://<host>:<port>, or MLFLOW_TRACKING_URI) or "
        "start the server; use MLflow's local store instead (logger=mlflow without a tracking_uri and with "
        "MLFLOW_TRACKING_URI unset writes a SQLite database under paths.log_dir/mlruns: mlflow ui "
        "--backend-store-uri sqlite:///<log_dir>/mlruns/mlflow.db shows it); or log with logger=tensorboard")


def wandb_server_error(url: str, timeout: float) -> TrackingServerError | None:
    """None when the W&B server at ``url`` answers within ``timeout`` seconds, else the one-paragraph error that
    names it, why, and the ways out (an online ``logger=wandb``: asked by the pre-flight and by the logger)."""
    started = time.monotonic()
    why = probe(url, timeout)
    if why is None:
        return None
    return TrackingServerError(
        f"logger=wandb with logger.wandb.offline=false cannot reach the W&B server at {shown(url)}: {why} (after "
        f"{time.monotonic() - started:.1f} s; labkit waits up to logger.wandb.connect_timeout_s={timeout:g} s). "
        "Nothing was trained. "
        "Ways out: check the network or the server's address (WANDB_BASE_URL, wandb login --host=...); log "
        "offline with logger.wandb.offline=true (the default: the run is saved in <run dir>/wandb, upload it "
        "later with wandb sync <run dir>/wandb/offline-run-*); or log with logger=tensorboard")


def server_error(what: str, url: str, timeout: float) -> TrackingServerError | None:
    """:func:`mlflow_server_error` or :func:`wandb_server_error`, by the logger's name (``mlflow``, ``wandb``)."""
    return {"mlflow": mlflow_server_error, "wandb": wandb_server_error}[what](url, timeout)
