"""Issue 34: what a run sends to MLflow and TensorBoard, seen in a real browser (headless Chromium driven by Playwright).

Slow and needs Debian's ``chromium`` and ``pip install playwright`` (the system browser: no ``playwright install``);
without them the tests say so and are skipped, except under CI=true (.ci/run installs both), where they fail.
Servers bind 127.0.0.1 on a free port and are stopped at the end.
The screenshots README shows (docs/images/mlflow_run.png, tensorboard_images.png) are taken here: with
LABKIT_UPDATE_SCREENSHOTS=1 they replace those files; otherwise they go to the test's own folder (a test run leaves
the checkout as it was).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FAST = ["trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1"]


def _screenshot(name: str, tmp_path: Path) -> Path:
    """Where a screenshot goes: README's image with LABKIT_UPDATE_SCREENSHOTS=1, else the test's folder."""
    return ROOT / "docs" / "images" / name if os.environ.get("LABKIT_UPDATE_SCREENSHOTS") == "1" else tmp_path / name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(args: list[str], port: int, ready_path: str, log: Path, timeout_s: float = 90.0) -> subprocess.Popen:
    """Start a server and wait (bounded) until ``ready_path`` answers on 127.0.0.1:port."""
    proc = subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{args[0]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    _stop(proc)
    raise AssertionError(f"{args[0]} did not answer within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=15)


def _shows_line(page, text: str, timeout: float = 30_000) -> None:
    """Wait until the page shows a line that is exactly ``text`` (rendered text only, not hidden elements)."""
    page.wait_for_function("t => document.body.innerText.split('\\n').some(l => l.trim() === t)", arg=text,
                           timeout=timeout)


@pytest.fixture
def browser():
    if os.environ.get("CI"):  # CI installs both (.ci/run, the test extras): missing there is a failure, not a skip
        import playwright.sync_api as playwright

        assert CHROMIUM is not None, "no chromium on PATH: .ci/run installs Debian's chromium"
    else:
        playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
        if CHROMIUM is None:
            pytest.skip("no chromium on PATH (apt-get install -y chromium)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def trained(cfg_factory, tmp_path, monkeypatch):
    """A tiny run logged to TensorBoard and MLflow's default local store (SQLite under paths.log_dir), evaluated."""
    from labkit.cli.evaluate import evaluate
    from labkit.run.lifecycle import execute

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = cfg_factory("logger=[tensorboard,mlflow]", *FAST)
    execute(cfg)
    run_dir = Path(cfg.paths.output_dir)
    evaluate(cfg_factory(f"run={run_dir}", name="evaluate", sub="ev"))
    return run_dir, tmp_path / "logs" / "mlruns" / "mlflow.db"


def test_the_mlflow_run_page_shows_the_confusion_matrix_and_the_model(trained, browser, tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    run_dir, db = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("labkit")
    (run,) = client.search_runs([exp.experiment_id])
    port = _free_port()
    server = _serve([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
                     "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], port, "/health",
                    tmp_path / "mlflow_server.log")
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        base = f"http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}"
        page.goto(base, timeout=60_000)
        page.get_by_text(run_dir.name).first.wait_for(timeout=60_000)  # the run page, named after its directory
        # the logged model: the overview links to the model of this run; its page lists the model's files (MLmodel,
        # the weights under data/, the input example) and its MLmodel names this run: absent if it were not logged
        (model,) = mlflow.search_logged_models(experiment_ids=[exp.experiment_id], output_format="list")
        link = page.locator(f"a[href*='/models/{model.model_id}'] >> visible=true").first
        link.wait_for(timeout=30_000)
        assert link.inner_text().strip() == "model"
        page.goto(f"http://127.0.0.1:{port}/{link.get_attribute('href')}/artifacts", timeout=60_000)
        for name in ("data", "MLmodel", "input_example.json"):
            _shows_line(page, name)
        page.locator("text='MLmodel' >> visible=true").first.click()
        for text in (f"run_id: {run.info.run_id}", f"model_id: {model.model_id}", "signature:"):  # the preview
            page.wait_for_function("t => document.body.innerText.includes(t)", arg=text, timeout=30_000)
        page.goto(base + "/artifacts", timeout=60_000)
        page.get_by_text("evaluation", exact=True).first.click(timeout=60_000)
        page.get_by_text("test", exact=True).first.click(timeout=30_000)
        page.get_by_text("confusion_matrix.png").first.click(timeout=30_000)
        # the figure's preview: an image as wide as the confusion matrix drawn by the report
        page.wait_for_function("Array.from(document.images).some(i => i.complete && i.naturalWidth > 300)",
                               timeout=30_000)
        shot = _screenshot("mlflow_run.png", tmp_path)
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 20_000
    finally:
        _stop(server)


def test_tensorboard_images_tab_shows_the_figures(trained, browser, tmp_path):
    run_dir, _ = trained
    port = _free_port()
    server = _serve([sys.executable, "-m", "tensorboard.main", "--logdir", str(run_dir / "tensorboard"), "--host",
                     "127.0.0.1", "--port", str(port)], port, "/data/logdir", tmp_path / "tensorboard.log")
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/?darkMode=false#images", timeout=60_000)
        page.get_by_text("evaluation/test/confusion_matrix").first.wait_for(timeout=60_000)
        page.get_by_text("training/learning_curves").first.wait_for(timeout=30_000)
        shot = _screenshot("tensorboard_images.png", tmp_path)
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 20_000
    finally:
        _stop(server)
