"""compare.py: any runs side by side (settings that differ, metrics, evaluation figures, overlaid curves)."""
from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
from conftest import ROOT
from omegaconf import open_dict
from test_summary import write_job

from labkit.callbacks.history import append_row
from labkit.core.files import read_json
from labkit.tracking.compare import NotARunError, compare
from labkit.tracking.summary import fmt


def _csv(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


@pytest.mark.slow
def test_three_runs_from_different_days_and_tasks(tmp_path, cfg_factory, capsys):
    from labkit.cli.evaluate import evaluate
    from labkit.run.lifecycle import execute

    runs = tmp_path / "logs" / "runs"
    specs = {"2026-11-27_09-00-00_aaaaaa_lenet-digits": ("task.optimizer.lr=0.05",),
             "2026-11-28_09-00-00_bbbbbb_lenet-digits": ("task.optimizer.lr=0.01",),
             "2026-11-29_09-00-00_cccccc_embedding_net-digits": ("task=siamese", "model=embedding_net")}
    metrics = {}
    for name, extra in specs.items():
        cfg = cfg_factory("trainer.max_epochs=2", "logger=none", "data.batch_size=128", *extra, sub=name[:10])
        with open_dict(cfg):
            cfg.paths.output_dir = str(runs / name)
        metrics[name] = execute(cfg)
    a, b, c = specs
    evaluate(cfg_factory(f"run={runs / a}", name="evaluate", sub="ev_a"))
    retrieval = evaluate(cfg_factory(f"run={runs / c}", "tsne_samples=0", name="evaluate", sub="ev_c"))["retrieval"]

    table = compare([str(runs / "2026-11-2*")])
    out = table["out_dir"]
    assert out.parent == tmp_path / "logs" / "compare"  # the runs' common log dir
    rows = _csv(out / "comparison.csv")
    assert [r["run"] for r in rows] == list(specs) and [r["task"] for r in rows] == ["classification"] * 2 + ["siamese"]
    cols = list(rows[0])
    assert "task.optimizer.lr" in cols and "model._target_" in cols
    assert "task.margin" not in cols  # only the siamese run uses a margin: nothing to compare it with
    assert not any(k.startswith("paths.") or k.endswith(("dirpath", "default_root_dir")) for k in cols)
    assert "seed" not in cols and "data.batch_size" not in cols  # equal in all three: not a column
    assert [r["task.optimizer.lr"] for r in rows] == ["0.05", "0.01", "0.01"]
    assert [r["model._target_"] for r in rows] == ["LeNet", "LeNet", "EmbeddingNet"]
    assert rows[0]["test/acc"] == fmt(metrics[a]["test/acc"]) and rows[2]["test/acc"] == ""
    assert rows[2]["test/loss"] == fmt(metrics[c]["test/loss"])
    assert rows[1]["val/acc best"] == fmt(metrics[b]["best_val/acc"]) and rows[2]["val/acc best"] == ""
    assert all(r["val/loss final"] for r in rows) and rows[2]["val/loss best"] == fmt(metrics[c]["best_val/loss"])
    report_a = read_json(runs / a / "evaluation" / "test" / "report.json")
    assert rows[0]["classification/accuracy"] == fmt(report_a["classification"]["accuracy"])
    assert rows[2]["retrieval/map_at_r"] == fmt(retrieval["map_at_r"]) and rows[0]["retrieval/map_at_r"] == ""

    printed = capsys.readouterr().out
    # grouped by task, each table with its task's headline metrics; runs named by id and name, paths listed below
    assert "### classification: 2 runs" in printed and "### siamese: 1 run" in printed
    assert "same in these runs: model._target_=EmbeddingNet" in printed
    # status ok everywhere: said once, not a column; each run listed by its folder under the runs' common one
    assert "| aaaaaa_lenet-digits | 0.05 " in printed and f"- aaaaaa_lenet-digits: {a}" in printed
    assert "same in these runs: model._target_=LeNet status=ok" in printed
    assert max(len(line) for line in printed.splitlines() if line.startswith("|")) <= 120
    md = (out / "comparison.md").read_text()
    assert "![validation curves](validation_curves.png)" in md
    # two panels, val/loss (all three runs) and val/acc (the classifiers), of about 6 inches each
    png = matplotlib.image.imread(out / "validation_curves.png")
    assert png.shape[1] > 1.7 * png.shape[0]


@pytest.mark.slow
def test_a_killed_sweep_gets_its_summary_rebuilt_from_the_command_line(tmp_path):
    sweep = tmp_path / "logs" / "multirun" / "2026-11-29_12-00-00_dddddd"
    done = write_job(sweep, 0, ["model=lenet"], {"status": "ok", "test/acc": 0.875, "test/error": 12.5,
                                                 "epochs": 2, "best_val/acc": 0.9})
    for epoch, (loss, acc) in enumerate([(1.5, 0.6), (0.8, 0.9)]):
        append_row(done / "history.csv", {"epoch": epoch, "step": 10 * (epoch + 1), "val/loss": loss, "val/acc": acc})
    write_job(sweep, 1, ["model=mlp"], None)  # the sweep was killed while job 1 trained
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(ROOT / "compare.py"), str(sweep), "--out", str(tmp_path / "cmp")],
                       capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = _csv(sweep / "summary.csv")
    assert [(s["job"], s["model"], s["status"], s["test/acc"]) for s in summary] == [
        ("0", "lenet", "ok", "0.875"), ("1", "mlp", "incomplete", "")]
    assert (sweep / "summary.png").stat().st_size > 5000 and "Sweep summary" in r.stdout
    rows = _csv(tmp_path / "cmp" / "comparison.csv")
    assert [(x["run"], x["status"], x["val/acc final"], x["val/loss best"]) for x in rows] == [
        ("2026-11-29_12-00-00_dddddd/0", "ok", "0.9", "0.8"), ("2026-11-29_12-00-00_dddddd/1", "incomplete", "", "")]
    assert (tmp_path / "cmp" / "validation_curves.png").stat().st_size > 5000
    assert "no per-epoch history (history.csv) in: 2026-11-29_12-00-00_dddddd/1" in r.stdout


def test_paths_that_are_not_runs_are_refused_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    for bad, why in ((tmp_path / "empty", "holds no run"), (tmp_path / "missing", "does not exist"),
                     (tmp_path / "notes.txt", "outside any run directory"), (tmp_path / "2026-*", "matches nothing")):
        with pytest.raises(NotARunError, match=why) as e:
            compare([str(bad)], out=tmp_path / "out")
        assert str(bad) in str(e.value) and "config.yaml" in str(e.value)
    assert not (tmp_path / "out").exists()  # nothing is written for a refused path
    r = subprocess.run([sys.executable, str(ROOT / "compare.py"), str(tmp_path / "empty")], capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    assert not (tmp_path / "logs").exists()


@pytest.mark.slow
def test_a_classifier_an_autoencoder_and_a_triplet_run_fit_in_120_columns(tmp_path, cfg_factory, capsys):
    """Issue 21: grouped by task with each task's headline metrics, logger internals and settings a task does not use
    left out, at most 120 characters wide; what does not fit is listed under its table."""
    from labkit.run.lifecycle import execute

    runs = tmp_path / "logs" / "runs"
    specs = {"2026-12-01_09-00-00_aaaaaa_lenet-digits": ("logger=csv", "task.label_smoothing=0.1"),
             "2026-12-02_09-00-00_bbbbbb_conv_autoencoder-digits": ("task=autoencoder", "model=conv_autoencoder",
                                                                   "logger=tensorboard"),
             "2026-12-03_09-00-00_cccccc_embedding_net-digits": ("task=triplet", "model=embedding_net", "logger=none")}
    for name, extra in specs.items():
        cfg = cfg_factory("trainer.max_epochs=1", "data.batch_size=128", "trainer.limit_train_batches=2",
                          "trainer.limit_val_batches=1", *extra, sub=name[:10])
        with open_dict(cfg):
            cfg.paths.output_dir = str(runs / name)
        execute(cfg)
    a, b, c = specs
    table = compare([str(runs / a), str(runs / b), str(runs / c)], out=tmp_path / "cmp")
    printed = capsys.readouterr().out
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    tables = [line for line in md.splitlines() if line.startswith("|")]
    assert tables and max(map(len, tables)) <= 120
    assert not any("logger" in col for col in table["columns"])  # tracking internals are never settings
    sections = md.split("### ")[1:]
    assert [s.split(":")[0] for s in sections] == ["classification", "autoencoder", "triplet"]
    headers = {s.split(":")[0]: next(line for line in s.splitlines() if line.startswith("| run")) for s in sections}
    assert "test/acc" in headers["classification"] and "test/error" not in headers["classification"]  # 1 - acc
    assert "test/loss" in headers["autoencoder"] and "test/acc" not in headers["autoencoder"]
    assert "retrieval/precision_at_1" in headers["triplet"] and "retrieval/map_at_r" in headers["triplet"]
    # label smoothing: a classification setting; blank (not 0.0) for the runs whose task has no such argument
    rows = {r["run"]: r for r in table["rows"]}
    assert "task.label_smoothing" not in table["differ"]  # only the classifier acts on it: nothing to compare
    assert rows[a]["test/acc"] is not None and rows[c]["retrieval/precision_at_1"] is not None
    assert "| aaaaaa_lenet-digits" in printed


def test_unused_and_internal_settings_follow_the_task(tmp_path):
    from labkit.tracking.summary import fit_columns, internal_setting, unused_settings

    classifier = "labkit.tasks.ClassificationTask"
    flat = {"task.label_smoothing": 0.1, "task.margin": 1.0, "task.freeze": None, "task.unfreeze_lr_factor": 0.1,
            "data.augment": False, "data.hflip": 0.5, "data.resample_tuples": True, "task.optimizer.lr": 0.1}
    assert unused_settings(flat, classifier) == {"task.margin", "task.unfreeze_lr_factor", "data.hflip",
                                                 "data.resample_tuples"}
    flat.update({"task.freeze": "backbone", "task.unfreeze_at_epoch": 3, "data.augment": True})
    assert unused_settings(flat, classifier) == {"task.margin", "data.resample_tuples"}
    assert "data.resample_tuples" not in unused_settings(flat, "labkit.tasks.metric.TripletTask")
    assert all(map(internal_setting, ("logger.tensorboard.version", "logger", "callbacks.progress_bar.refresh_rate",
                                      "paths.data_dir", "task.projector")))
    assert not any(map(internal_setting, ("task.optimizer.lr", "callbacks.early_stopping.patience", "seed")))
    rows = [{"run": "r1", "status": "ok", "x" * 50: 1, "y" * 50: 2, "m": 0.5}]
    shown, hidden = fit_columns(rows, ["run", "status", "x" * 50, "y" * 50, "m"], ["run", "status", "m"], width=80)
    assert shown == ["run", "status", "x" * 50, "m"] and hidden == ["y" * 50]


def test_curves_against_wall_clock_minutes_compare_runs_of_different_lengths(tmp_path, monkeypatch):
    """``--x time``: a long slow-per-result run and a short one drawn by what they cost (history.csv's wall_time_s,
    cumulative over resumes), not by epoch."""
    import labkit.tracking.compare as cmp

    runs = tmp_path / "logs" / "runs"
    paths = []
    for name, per_epoch, accs in (("long", 30.0, [0.3, 0.5, 0.6, 0.7, 0.75, 0.8]), ("short", 90.0, [0.6, 0.8])):
        d = write_job(runs, 0, [f"+name={name}"], {"status": "ok", "epochs": len(accs)}).rename(runs / name)
        for epoch, acc in enumerate(accs):
            append_row(d / "history.csv", {"epoch": epoch, "step": epoch + 1, "wall_time_s": per_epoch * (epoch + 1),
                                           "val/acc": acc, "val/loss": 1 - acc})
        paths.append(str(d))
    drawn = {}

    def keep(fig, path):
        drawn[Path(path).parent.name] = {(ax.get_title(), line.get_label()): list(line.get_xdata())
                                         for ax in fig.axes for line in ax.get_lines()}
        return Path(path)

    monkeypatch.setattr(cmp, "save_figure", keep)
    compare(paths, out=tmp_path / "by_time", echo=False, x="time")
    compare(paths, out=tmp_path / "by_epoch", echo=False)
    by_time, by_epoch = drawn["by_time"], drawn["by_epoch"]
    assert by_time[("val/acc", "long")] == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]  # minutes at the end of each epoch
    assert by_time[("val/acc", "short")] == [1.5, 3.0]
    assert by_epoch[("val/acc", "short")] == [0, 1] and by_epoch[("val/loss", "long")] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(cmp.ConfigError, match="x='wall' is not an axis; valid: epoch, time"):
        compare(paths, out=tmp_path / "bad", echo=False, x="wall")
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def _nine_runs(tmp_path: Path, cfg_factory) -> tuple[Path, list[str]]:
    """Nine finished classification runs written as labkit writes them (config.yaml with the command line's
    overrides, metrics.json, history.csv, provenance.json), differing in lr, batch size and epochs; three of them with
    early stopping, one read another copy of the data (its fingerprint differs)."""
    from labkit.core.files import write_json
    from labkit.run.directory import save_config

    runs = tmp_path / "logs" / "runs"
    names = []
    for i, (lr, bs, epochs) in enumerate([(lr, bs, ep) for lr in (0.1, 0.03, 0.01) for bs, ep in
                                          ((32, 2), (64, 3), (128, 4))]):
        extra = ["callbacks=early_stopping"] if i % 3 == 2 else []
        overrides = [f"task.optimizer.lr={lr}", f"data.batch_size={bs}", f"trainer.max_epochs={epochs}", *extra]
        cfg = cfg_factory(*overrides, sub=f"c{i}")
        name = f"2026-12-0{i + 1}_09-00-00_{'abcdefghi'[i] * 6}_lenet-digits"
        run = runs / name
        run.mkdir(parents=True)
        with open_dict(cfg):
            cfg.paths.output_dir = str(run)
            cfg.overrides = overrides
        save_config(cfg, run)
        acc = 0.5 + 0.04 * i
        write_json(run / "metrics.json", {"status": "ok", "seed": 0, "params": 44426, "epochs": epochs,
                                          "overrides": overrides, "test/acc": acc, "test/error": 1 - acc,
                                          "test/loss": 1.2 - acc, "best_val/acc": acc + 0.01,
                                          "val/acc": acc, "val/loss": 1.1 - acc, "wall_time_s": 10.0 + i})
        for epoch in range(epochs):
            append_row(run / "history.csv", {"epoch": epoch, "step": 10 * (epoch + 1), "val/loss": 1.5 - 0.1 * epoch,
                                             "val/acc": acc - 0.05 * (epochs - epoch - 1)})
        sha = ("f" if i == 4 else "0") * 64
        write_json(run / "provenance.json", {"sessions": [{
            "code": {"commit": "1234567890abcdef" * 2 + ("x" * 8 if i == 4 else "y" * 8), "labkit": "0.3"},
            "versions": {"torch": "2.4.0"}, "machine": {"host": "box"},
            "data": [{"path": "/data/MNIST/raw/train-images-idx3-ubyte-a-rather-long-file-name", "sha256": sha}]}]})
        names.append(name)
    return runs, names


@pytest.mark.slow
def test_nine_runs_show_the_swept_keys_first_within_120_columns(tmp_path, cfg_factory, capsys, monkeypatch):
    """Issue 34: the keys the runs differ in (lr, batch size, epochs) are the table's first columns, no callback
    `_target_`, no test/error beside test/acc, runs named relative to their folder, no printed line over 120."""
    runs, names = _nine_runs(tmp_path, cfg_factory)
    monkeypatch.chdir(tmp_path)
    table = compare([str(runs)], out=tmp_path / "cmp")
    printed = capsys.readouterr().out
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    too_long = [line for line in printed.splitlines() if len(line) > 120]  # comparison.md keeps long facts whole
    assert not too_long, too_long
    header = next(line for line in printed.splitlines() if line.startswith("| run"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[:4] == ["run", "task.optimizer.lr", "data.batch_size", "trainer.max_epochs"], cols
    assert "test/acc" in cols and "test/error" not in cols and "test/error" not in md  # 1 - test/acc: derivable
    assert "status" not in cols and "epochs" not in cols  # the same in every run / the same as trainer.max_epochs
    assert not any(c.endswith("_target_") for c in cols + table["differ"])
    assert "callbacks.early_stopping" in table["differ"] and "callbacks.early_stopping.patience" not in table["differ"]
    assert "same in every run: status=ok" in printed
    # the runs are named relative to their common folder (logs/runs), without the date
    rows = [line for line in printed.splitlines() if line.startswith("| aaaaaa_lenet-digits")]
    assert len(rows) == 1 and "| 0.1 " in rows[0] and "| 32 " in rows[0]
    assert f"runs (in {runs.resolve()})" in md and max(len(line) for line in md.splitlines() if line.startswith("|")) <= 120
    assert "warning: these runs read different data" in printed  # wrapped, not dropped
    assert "written in cmp: comparison.md, comparison.csv, validation_curves.png" in printed
    # the CSV keeps everything, the derivable column and the full paths too
    rows_csv = _csv(tmp_path / "cmp" / "comparison.csv")
    assert len(rows_csv) == 9 and "test/error" in rows_csv[0] and rows_csv[0]["path"] == str(runs / names[0])
    assert rows_csv[0]["callbacks.early_stopping"] == "" and rows_csv[2]["callbacks.early_stopping"] == "EarlyStopping"


def test_losses_of_different_kinds_get_panels_of_their_own(tmp_path, monkeypatch):
    import labkit.tracking.compare as cmp

    runs = tmp_path / "runs"
    targets = {"clf": "labkit.tasks.ClassificationTask", "ae": "labkit.tasks.AutoencoderTask",
               "tri": "labkit.tasks.metric.TripletTask"}
    paths = []
    for name, target in targets.items():
        d = write_job(runs, 0, [f"+name={name}"], {"status": "ok", "epochs": 2}, target=target).rename(runs / name)
        for epoch in range(2):
            append_row(d / "history.csv", {"epoch": epoch, "step": epoch + 1, "val/loss": 0.5 - 0.1 * epoch,
                                           **({"val/acc": 0.5 + 0.1 * epoch} if name == "clf" else {})})
        paths.append(str(d))
    drawn = {}

    def keep(fig, path):
        drawn.update({ax.get_title(): [line.get_label() for line in ax.get_lines()] for ax in fig.axes
                      if ax.get_visible()})
        return Path(path)

    monkeypatch.setattr(cmp, "save_figure", keep)
    compare(paths, out=tmp_path / "cmp", echo=False)
    assert drawn == {"val/loss (cross-entropy)": ["clf"], "val/loss (MSE)": ["ae"], "val/loss (triplet)": ["tri"],
                     "val/acc": ["clf"]}
