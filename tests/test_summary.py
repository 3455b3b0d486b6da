"""Task-aware sweep summaries: headline metrics per task, objective, swept keys, rounding, failures, bar chart."""
from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
from conftest import ROOT
from omegaconf import OmegaConf

from labkit.core.files import read_json, write_json
from labkit.tracking.summary import fmt, summarize_sweep


def write_job(sweep: Path, job: int, overrides: list[str], metrics: dict | None,
              target: str = "labkit.tasks.ClassificationTask", optimized_metric: str | None = None) -> Path:
    """A job folder as a Hydra sweep leaves it: .hydra/overrides.yaml, config.yaml and (once done) metrics.json."""
    d = sweep / str(job)
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
    OmegaConf.save(OmegaConf.create({"task": {"_target_": target, "optimizer": {"lr": 0.01}},
                                     "optimized_metric": optimized_metric, "paths": {"output_dir": str(d)}}),
                   d / "config.yaml")
    if metrics is not None:
        write_json(d / "metrics.json", {"overrides": overrides, **metrics})
    return d


def _csv(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_numbers_are_rounded_to_four_significant_digits():
    assert fmt(0.1 + 0.2) == "0.3" and fmt(0.91234567890123) == "0.9123" and fmt(8.765432109876) == "8.765"
    assert fmt(123456.789) == "123457" and fmt(44426) == "44426" and fmt(1e-7) == "1e-07"
    assert fmt(float("nan")) == "nan" and fmt(None) == "" and fmt(True) == "true"


def test_search_summary_has_objective_swept_keys_constants_failures_and_a_killed_job(tmp_path):
    sweep = tmp_path / "multirun" / "2026-11-29_10-00-00_abcdef"
    sweep.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"hydra": {"sweeper": {"direction": "maximize"}}}), sweep / "multirun.yaml")
    common = ["hparams_search=optuna", "data.batch_size=64"]
    ok = {"status": "ok", "params": 44426, "epochs": 3, "wall_time_s": 12.345678}
    write_job(sweep, 0, common + ["task.optimizer.lr=0.012345678901234567"],
              {**ok, "best_val/acc": 0.9012345678, "test/acc": 0.91234567890123, "test/error": 8.765432109876},
              optimized_metric="best_val/acc")
    write_job(sweep, 1, common + ["task.optimizer.lr=0.0456"],
              {**ok, "best_val/acc": 0.95, "test/acc": 0.94, "test/error": 6.0}, optimized_metric="best_val/acc")
    write_job(sweep, 2, common + ["task.optimizer.lr=0.09"],
              {"status": "failed", "error": "NonFiniteLossError: train/loss is nan at step 7"},
              optimized_metric="best_val/acc")
    write_job(sweep, 10, common + ["task.optimizer.lr=0.002"], None, optimized_metric="best_val/acc")  # killed

    rows = summarize_sweep(sweep)
    table = _csv(sweep / "summary.csv")
    assert list(table[0]) == ["job", "status", "task.optimizer.lr", "best_val/acc (objective)", "test/acc",
                              "test/error", "epochs", "params", "wall_time_s", "overrides", "error"]
    assert [r["job"] for r in table] == ["0", "1", "2", "10"]  # numeric order, not 0, 1, 10, 2
    assert [r["status"] for r in table] == ["ok", "ok", "failed", "incomplete"]
    assert table[0]["task.optimizer.lr"] == "0.01235" and table[0]["test/acc"] == "0.9123"
    assert table[0]["test/error"] == "0.08765" and table[0]["wall_time_s"] == "12.35"  # a fraction (1 - acc), also
    # for this run whose metrics.json, like those of labkit < 0.2, holds it in percent
    assert table[0]["best_val/acc (objective)"] == "0.9012" and table[1]["best_val/acc (objective)"] == "0.95"
    assert "NonFiniteLossError" in table[2]["error"] and table[3]["test/acc"] == ""
    assert rows[1]["test/acc"] == 0.94  # the returned rows keep the numbers

    md = (sweep / "summary.md").read_text()
    assert "same in every job: hparams_search=optuna data.batch_size=64" in md
    assert "objective: best_val/acc (maximize), best job 1 = 0.95" in md
    assert "data.batch_size |" not in md and "| hparams_search" not in md  # constants are not columns
    body = md[md.index("| job |"):]
    assert not re.search(r"0123456|1234567|345678|765432", body), body  # no long floats in the table
    assert "1 incomplete" in md and "1 failed" in md
    assert (sweep / "summary.png").stat().st_size > 5000 and "![" in md


def test_a_damaged_metrics_json_is_named_and_the_other_jobs_still_summarized(tmp_path, caplog):
    from labkit.run.directory import read_metrics

    sweep = tmp_path / "sweep"
    write_job(sweep, 0, ["seed=0"], {"status": "ok", "test/acc": 0.9})
    bad = write_job(sweep, 1, ["seed=1"], None)
    (bad / "metrics.json").write_text('{"status": "ok", "test/acc": 0.')  # cut off mid-write by a full disk
    rows = summarize_sweep(sweep)
    assert [r["status"] for r in rows] == ["ok", "incomplete"] and rows[0]["test/acc"] == 0.9
    assert f"cannot read {bad / 'metrics.json'}" in caplog.text
    assert read_metrics(bad) == {} and read_metrics(tmp_path / "nowhere") == {}
    with pytest.raises(ValueError):  # labkit.api.Run.metrics: the user asked for this run's figures
        read_metrics(bad, strict=True)


def _train(args, cwd: Path):
    env = dict(os.environ, LABKIT_LOG_DIR=str(cwd / "logs"), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_siamese_vs_triplet_sweep_shows_losses_and_retrieval_figures(tmp_path, cfg_factory):
    from labkit.cli.evaluate import evaluate

    r = _train(["-m", "task=siamese,triplet", "model=embedding_net", "data=digits", "trainer.max_epochs=1",
                "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
                "trainer.enable_progress_bar=false"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = next((tmp_path / "logs" / "multirun").iterdir())
    table = _csv(sweep / "summary.csv")
    assert [(row["task"], row["status"]) for row in table] == [("siamese", "ok"), ("triplet", "ok")]
    for row in table:
        metrics = read_json(sweep / row["job"] / "metrics.json")
        assert row["test/loss"] == fmt(metrics["test/loss"]) and row["test/loss"]
        # the training run itself measured retrieval on the test split: the summary shows it straight away
        assert row["retrieval/precision_at_1"] == fmt(metrics["retrieval/precision_at_1"])
        assert row["retrieval/map_at_r"] == fmt(metrics["retrieval/map_at_r"])
    assert "test_acc" not in table[0] and "test/acc" not in table[0]  # no classification columns
    assert "same in every job: model=embedding_net data=digits" in (sweep / "summary.md").read_text()
    header = next(line for line in r.stdout.splitlines() if line.startswith("| job"))
    assert [c.strip() for c in header.strip("|").split("|")][:5] == [  # the swept key first; status: 2 ok
        "job", "task", "test/loss", "retrieval/precision_at_1", "retrieval/map_at_r"]
    assert matplotlib.image.imread(sweep / "summary.png").shape[1] > 0
    assert "epoch 0 (1 of 1): train/dist_neg" in (sweep / "0" / "train.log").read_text()  # labkit.tracking.history's line
    # TensorBoard lists each job under a readable name: its number and overrides
    assert [p.name for p in (sweep / "1" / "tensorboard").iterdir() if p.is_dir()] == ["1_task=triplet"]

    # evaluate.py's retrieval report agrees with what training recorded (same checkpoint, same search)
    report = evaluate(cfg_factory(f"run={sweep / '0'}", "tsne_samples=0", name="evaluate", sub="eval0"))["retrieval"]
    assert report["precision_at_1"] == pytest.approx(read_json(sweep / "0" / "metrics.json")
                                                     ["retrieval/precision_at_1"], abs=1e-6)
    rows = summarize_sweep(sweep)
    assert [row["job"] for row in rows] == ["0", "1"]


def test_a_search_of_nine_jobs_shows_its_swept_keys_first_within_120_columns(tmp_path, capsys):
    """Issue 34: lr, batch size, epochs and momentum are the first columns (none moved below the table), no test/error
    beside test/acc, the study's every-trial table names runs by their job folder; no printed line over 120."""
    from labkit.tracking.summary import print_summary

    sweep = tmp_path / "a-rather-deep" / "folder-of-experiments" / "logs" / "multirun" / "2026-12-01_10-00-00_abcdef"
    grid = [(lr, bs, ep, mom) for lr in (0.1, 0.03, 0.01) for bs, ep, mom in ((32, 2, 0.9), (64, 3, 0.8), (128, 4, 0))]
    trials = []
    for i, (lr, bs, ep, mom) in enumerate(grid):
        acc = 0.5 + 0.04 * i
        over = ["hparams_search=optuna", f"task.optimizer.lr={lr}", f"data.batch_size={bs}", f"trainer.max_epochs={ep}",
                f"task.optimizer.momentum={mom}"]
        write_job(sweep, i, over, {"status": "ok", "test/acc": acc, "test/error": 1 - acc, "epochs": ep,
                                   "params": 44426, "wall_time_s": 10.0 + i, "best_val/acc": acc},
                  optimized_metric="best_val/acc")
        trials.append({"number": i, "state": "complete", "value": acc, "epochs": ep, "run_dir": str(sweep / str(i)),
                       "params": {"task.optimizer.lr": lr, "data.batch_size": bs, "trainer.max_epochs": ep,
                                  "task.optimizer.momentum": mom}})
    write_json(sweep / "study.json", {"study_name": "lenet-digits", "storage": "sqlite:///optuna.db", "n_trials": 9,
                                      "tally": {"complete": 9, "total": 9}, "pruner": "none", "monitor": "val/acc",
                                      "optimized_metric": "best_val/acc", "direction": "maximize",
                                      "jobs": {str(i): i for i in range(9)}, "trials": trials,
                                      "best": {"number": 8, "value": 0.82, "params": trials[8]["params"]}})
    print_summary(sweep)
    printed = capsys.readouterr().out
    md = (sweep / "summary.md").read_text()
    too_long = [line for line in printed.splitlines() if len(line) > 120]  # summary.md keeps long facts whole
    assert not too_long, too_long
    header = next(line for line in md.splitlines() if line.startswith("| job"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[:6] == ["job", "trial", "task.optimizer.lr", "data.batch_size", "trainer.max_epochs",
                        "task.optimizer.momentum"], cols
    assert "test/acc" in cols and "test/error" not in md  # 1 - test/acc
    assert "momentum=" not in md.split("## Study")[0].split("not in the table")[-1]  # no swept key moved below
    assert "status" not in cols and "params" not in cols  # the same in every job: said once
    assert "params=44426" in md
    every = md.split("## Study")[1]
    trial_rows = [line for line in every.splitlines() if line.startswith("| ")]
    assert trial_rows[1].split("|")[1].strip() == "0" and str(sweep) not in "".join(trial_rows)
    assert [c.strip() for c in trial_rows[0].strip("|").split("|")][:3] == ["trial", "run", "data.batch_size"]
    assert trial_rows[1].startswith("| 0     | 0   |")  # trial 0 ran in job 0 of this sweep, not an absolute path
    assert "same in every trial: state=complete" in every
    assert "test/error" in _csv(sweep / "summary.csv")[0]  # the CSV keeps every column
