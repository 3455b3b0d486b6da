"""Provenance: every run records the code, libraries, machine and data that produced it; compare.py shows what
differs; ``reproduce=<run>`` re-runs a finished run and says whether its figures hold."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import write_mnist

from labkit.cli.train import cli
from labkit.core import files
from labkit.core.fingerprint import Fingerprints
from labkit.run import provenance

FAST = ("trainer.accelerator=cpu", "trainer.devices=1", "trainer.enable_progress_bar=false", "logger=none",
        "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2")


def _train(tmp: Path, *args: str) -> int:
    try:
        cli([f"paths.log_dir={tmp / 'logs'}", f"paths.data_dir={tmp / 'data'}", *FAST, *args])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0


def _newest(tmp: Path) -> Path:
    return max((tmp / "logs" / "runs").iterdir(), key=lambda p: (p / ".hydra" / "hydra.yaml").stat().st_mtime)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def test_a_dirty_checkout_records_its_commit_and_its_diff(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    _git(repo, "init", "-q")
    (repo / "pkg" / "model.py").write_text("width = 16\n")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    clean, diff = provenance.code(repo / "pkg")
    assert clean["commit"] == _git(repo, "rev-parse", "HEAD").strip() and clean["dirty"] is False and diff == ""
    (repo / "pkg" / "model.py").write_text("width = 32\n")
    dirty, diff = provenance.code(repo / "pkg")
    assert dirty["dirty"] is True and "-width = 16" in diff and "+width = 32" in diff
    outside, _ = provenance.code(tmp_path / "elsewhere")
    assert "commit" not in outside  # not a checkout: nothing claimed


@pytest.mark.slow
def test_every_run_records_its_provenance(tmp_path):
    assert _train(tmp_path, "trainer.max_epochs=1") == 0
    record = files.read_json(_newest(tmp_path) / "provenance.json")
    (session,) = record["sessions"]
    assert session["status"] == "ok" and session["started"] <= session["ended"]
    assert {"python", "torch", "pytorch-lightning", "numpy", "hydra-core", "omegaconf"} <= set(session["versions"])
    m = session["machine"]
    assert m["accelerator"] == "cpu" and m["devices"] == 1 and m["precision"] == "32-true" and m["cpu_count"] >= 1
    assert session["data"] == []  # the embedded digits: scikit-learn's version stands for them
    assert session["versions"]["scikit-learn"]


def test_a_changed_byte_changes_the_fingerprint_and_the_cache_reads_a_file_once(tmp_path, monkeypatch):
    import labkit.core.fingerprint as fp

    raw = write_mnist(tmp_path / "data", n_train=60, n_test=20)
    f = raw / "train-images-idx3-ubyte"
    reads = []
    original = fp._sha256
    monkeypatch.setattr(fp, "_sha256", lambda path: reads.append(Path(path).name) or original(path))

    def fingerprint(path):
        prints = Fingerprints(tmp_path / "cache")
        try:
            return prints.fingerprint(path)
        finally:
            prints.save()

    first = fingerprint(f)
    assert fingerprint(f) == first and reads == ["train-images-idx3-ubyte"]  # the second time: from the cache
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF  # one byte, same size
    f.write_bytes(bytes(data))
    second = fingerprint(f)
    assert first["size"] == second["size"] and first["sha256"] != second["sha256"]
    reads.clear()
    folder = fingerprint(raw)
    assert fingerprint(raw) == folder and folder["files"] == 4 and not folder["sampled"]
    assert sorted(reads) == ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-labels-idx1-ubyte"]


def test_a_large_folder_is_sampled_and_says_so(tmp_path, monkeypatch):
    import labkit.core.fingerprint as fp

    monkeypatch.setattr(fp, "SAMPLED_ABOVE", 10)
    monkeypatch.setattr(fp, "SAMPLE", 4)
    for i in range(30):
        (tmp_path / "imgs" / str(i % 3)).mkdir(parents=True, exist_ok=True)
        (tmp_path / "imgs" / str(i % 3) / f"{i}.bin").write_bytes(bytes([i]) * 10)
    before = Fingerprints(None).fingerprint(tmp_path / "imgs")
    assert before["sampled"] and before["files"] == 30
    (tmp_path / "imgs" / "0" / "new.bin").write_bytes(b"x")  # an added file always shows
    assert Fingerprints(None).fingerprint(tmp_path / "imgs")["sha256"] != before["sha256"]


@pytest.mark.slow
def test_compare_flags_runs_that_read_different_data(tmp_path):
    from labkit.tracking.compare import compare

    raw = write_mnist(tmp_path / "data", n_train=120, n_test=40)
    args = ("data=mnist", "data.val_size=20", "data.batch_size=16", "trainer.max_epochs=1")
    assert _train(tmp_path, *args) == 0
    first = _newest(tmp_path)
    f = raw / "t10k-images-idx3-ubyte"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    assert _train(tmp_path, *args) == 0
    second = _newest(tmp_path)
    table = compare([str(first), str(second)], out=tmp_path / "cmp", echo=False)
    assert table["provenance_differ"] == ["provenance:data.t10k-images-idx3-ubyte"]
    assert "warning: these runs read different data (data.t10k-images-idx3-ubyte)" in \
        (tmp_path / "cmp" / "comparison.md").read_text()


@pytest.mark.slow
def test_reproduce_reports_identical_figures_then_refuses_an_edited_config(tmp_path, capsys):
    assert _train(tmp_path, "trainer.max_epochs=2") == 0
    original = _newest(tmp_path)
    capsys.readouterr()
    assert _train(tmp_path, f"reproduce={original}") == 0
    out = capsys.readouterr().out
    copy = _newest(tmp_path)
    assert copy.name.endswith("reproduce-" + original.name[20:]) and "verdict: IDENTICAL" in out
    result = files.read_json(copy / "reproduction.json")
    assert result["verdict"] == "identical" and result["differing"] == []
    assert files.read_json(copy / "metrics.json")["reproduces"] == str(original)
    assert {r["figure"] for r in result["figures"]} >= {"test/acc", "test/loss", "val/loss", "global_step"}

    config = original / "config.yaml"  # edited after training (issue 32 item 3): named, not trained
    config.write_text(config.read_text().replace("lr: 0.01", "lr: 0.05", 1))
    runs = sorted((tmp_path / "logs" / "runs").iterdir())
    assert _train(tmp_path, f"reproduce={original}") == 1
    err = capsys.readouterr().err
    assert "config.yaml" in err and "task.optimizer.lr" in err
    assert sorted((tmp_path / "logs" / "runs").iterdir()) == runs  # nothing created


@pytest.mark.parametrize("extra, phrase", [(("model=lenet_v2",), "cannot change 'model'"),
                                           (("trainer.max_epochs=5",), "cannot change 'trainer.max_epochs'")])
@pytest.mark.slow
def test_reproduce_refuses_other_settings(tmp_path, capsys, extra, phrase):
    assert _train(tmp_path, "trainer.max_epochs=1") == 0
    original = _newest(tmp_path)
    capsys.readouterr()
    assert _train(tmp_path, f"reproduce={original}", *extra) == 1
    assert phrase in capsys.readouterr().err
    assert len(list((tmp_path / "logs" / "runs").iterdir())) == 1  # nothing created


def test_a_sweep_summary_shows_the_provenance_that_differs_between_its_jobs(tmp_path):
    from labkit.tracking.summary import build_summary

    for job, digest in (("0", "a" * 64), ("1", "b" * 64)):
        d = tmp_path / "sweep" / job
        d.mkdir(parents=True)
        (d / "config.yaml").write_text("seed: 0\ntask:\n  _target_: labkit.tasks.ClassificationTask\n")
        files.write_json(d / "metrics.json", {"status": "ok", "test/acc": 0.5, "overrides": [f"seed={job}"]})
        files.write_json(d / "provenance.json", {"sessions": [{
            "code": {"labkit": "0.1.0", "commit": "c" * 40}, "versions": {"torch": "2.14.1"},
            "machine": {"host": "node1"}, "data": [{"path": f"/data/train-{job}", "sha256": digest}]}]})
        (d / "provenance.json").write_text((d / "provenance.json").read_text().replace(f"train-{job}", "train"))
    summary = build_summary(tmp_path / "sweep")
    assert "provenance:data.train" in summary["columns"]
    assert [r["provenance:data.train"] for r in summary["rows"]] == ["a" * 12, "b" * 12]
    assert not any(c.startswith("provenance:code") or c.startswith("provenance:versions") for c in summary["columns"])
    assert "warning: these runs read different data (data.train)" in summary["preamble"]
