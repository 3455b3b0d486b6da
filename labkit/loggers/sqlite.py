"""A local SQLite store shared by parallel writers (sweep jobs on several workers, runs beside each other): its tables
and the experiment are made under a lock (:func:`prepare_sqlite_store`), and a write that finds the database locked
by another job waits and retries (``busy_timeout_s``, :func:`retry_locked`)."""
from __future__ import annotations

import contextlib
import logging
import os
import random
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows: the SQLite store is not locked while it is made)
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("labkit")


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
        except Exception as e:  # SQLAlchemy's and sqlite3's 'database is locked' come as several types: retried
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
