"""Tracking servers (a remote MLflow tracking_uri, online W&B): one that does not answer is refused in seconds, before
training, with one paragraph; one that goes away during the run costs it nothing but one warning and a count at the
end. Only 127.0.0.1 is ever contacted: an unused port, a socket that never answers, a tiny local HTTP server."""
from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
import time
from pathlib import Path

import pytest

from labkit.callbacks.history import read_history
from labkit.core.files import read_json
from labkit.core.servers import TrackingServerError, probe
from labkit.loggers import MLFLOW_HTTP_DEFAULTS, WandbLogger
from labkit.run.lifecycle import execute

FAST = ("trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "trainer.log_every_n_steps=1")


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_env(monkeypatch):
    """No MLFLOW_TRACKING_URI, and MLflow's HTTP settings unset (the logger sets bounded defaults: removed after)."""
    for key in (*MLFLOW_HTTP_DEFAULTS, "MLFLOW_TRACKING_URI"):
        monkeypatch.setenv(key, "unset")
        monkeypatch.delenv(key)


def test_unreachable_mlflow_server_is_refused_in_seconds(tmp_path, capsys, mlflow_env):
    from labkit.cli.train import cli

    uri = f"http://127.0.0.1:{_unused_port()}"
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_:
        cli([f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}", "trainer.accelerator=cpu",
             "trainer.devices=1", "trainer.enable_progress_bar=false", *FAST, "logger=mlflow",
             f"logger.mlflow.tracking_uri={uri}"])
    took = time.monotonic() - started
    assert exit_.value.code == 1 and took < 10, took
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    for phrase in (f"MLflow tracking server at {uri}: connection refused", "logger.mlflow.connect_timeout_s=5 s",
                   "logger.mlflow.tracking_uri=", "local store", "logger=tensorboard"):
        assert phrase in line, (phrase, line)
    assert "Traceback" not in err and "Retrying" not in err
    runs = tmp_path / "logs" / "runs"  # refused before anything trained: no run folder is left (issue 32 item 5)
    assert not runs.exists() or not any(runs.iterdir())


def test_online_wandb_without_its_server_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # Lightning sets it to dryrun for an offline run in this process
    url = f"http://127.0.0.1:{_unused_port()}"
    started = time.monotonic()
    with pytest.raises(TrackingServerError, match="logger.wandb.offline=true") as e:
        WandbLogger(save_dir=str(tmp_path), offline=False, connect_timeout_s=2, settings={"base_url": url})
    assert time.monotonic() - started < 5
    assert f"W&B server at {url}: connection refused" in str(e.value) and "logger=tensorboard" in str(e.value)


def test_credentials_in_the_uri_are_neither_probed_nor_shown(mlflow_env):
    from labkit.loggers import MLFlowLogger

    with pytest.raises(TrackingServerError) as e:
        MLFlowLogger(tracking_uri=f"http://bob:secret@127.0.0.1:{_unused_port()}", connect_timeout_s=2)
    assert "http://bob:***@127.0.0.1:" in str(e.value) and "connection refused" in str(e.value)
    assert "secret" not in str(e.value)


def test_a_server_that_never_answers_is_given_up_on_after_the_timeout():
    with socket.socket() as listening:  # accepts connections (the kernel's backlog) but never answers
        listening.bind(("127.0.0.1", 0))
        listening.listen(4)
        started = time.monotonic()
        why = probe(f"http://127.0.0.1:{listening.getsockname()[1]}", 1.0)
        assert why == "no answer within 1 s" and time.monotonic() - started < 3


# ----- a server that goes away during the run --------------------------------------------------------------------
class FakeMlflow(http.server.ThreadingHTTPServer):
    """Enough of MLflow's REST API for Lightning's logger; it stops for good after answering ``last`` log-batch
    requests (the parameters at the start of fit: the metrics come after it is gone)."""

    def __init__(self, last: int = 1):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[str] = []
        self.batches_left = last
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def _serve(self) -> None:
        self.serve_forever(poll_interval=0.05)
        self.server_close()  # the port refuses connections from now on

    def stop(self) -> None:
        threading.Thread(target=self.shutdown, daemon=True).start()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakeMlflow

    def log_message(self, *args) -> None:
        pass

    def _answer(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        if self.path.startswith("/api/2.0/mlflow/experiments/get-by-name"):
            self._answer({"experiment": {"experiment_id": "1", "name": "labkit", "lifecycle_stage": "active",
                                         "artifact_location": "file:///tmp/unused"}})
        else:  # /health and anything else
            self._answer({})

    def do_POST(self) -> None:
        self.server.requests.append(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path.endswith("/runs/create"):
            info = {"run_id": "r1", "run_uuid": "r1", "experiment_id": "1", "status": "RUNNING", "start_time": 0,
                    "lifecycle_stage": "active", "artifact_uri": "file:///tmp/unused"}
            self._answer({"run": {"info": info, "data": {}}})
            return
        self._answer({})
        if self.path.endswith("/runs/log-batch"):
            self.server.batches_left -= 1
            if self.server.batches_left <= 0:
                self.server.stop()


@pytest.mark.slow
def test_a_server_that_goes_away_mid_run_costs_one_warning_and_nothing_else(cfg_factory, caplog, mlflow_env):
    server = FakeMlflow(last=1)
    cfg = cfg_factory("logger=[tensorboard,mlflow]", f"logger.mlflow.tracking_uri={server.uri}", *FAST)
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="labkit"):
        metrics = execute(cfg)
    took = time.monotonic() - started
    server.thread.join(5)
    assert not server.thread.is_alive()  # it did go away
    assert any(p.endswith("/runs/log-batch") for p in server.requests)  # after taking part of the run's logging
    run = Path(cfg.paths.output_dir)
    assert metrics["status"] == "ok" and read_json(run / "metrics.json")["status"] == "ok"
    assert [r["epoch"] for r in read_history(run)] == [0, 1]
    assert "test/acc" in read_json(run / "metrics.json")
    assert list(run.glob("tensorboard/**/events.out.tfevents.*"))  # the other logger kept everything
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    failed = [w for w in warnings if f"logging to {server.uri} failed" in w]
    assert len(failed) == 1, warnings  # said once
    unsent = [w for w in warnings if f"did not reach {server.uri}" in w]
    assert unsent and "metric batch" in unsent[-1], warnings
    assert took < 60, took  # no minutes of retries (MLflow's own defaults: 7 retries, back-off 2, 120 s timeout)
