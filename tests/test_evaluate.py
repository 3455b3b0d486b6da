"""evaluate.py's console: the reports as a table, per-class accuracy included (issue 21 item 7)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from labkit.cli.evaluate import PER_CLASS_ENDS, evaluate, format_results
from labkit.core.errors import ConfigError
from labkit.run.lifecycle import execute


@pytest.mark.slow
def test_per_class_accuracy_is_printed_with_each_class_count(cfg_factory, capsys):
    cfg = cfg_factory("logger=none", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
                      "trainer.limit_val_batches=1")
    execute(cfg)
    capsys.readouterr()
    report = evaluate(cfg_factory(f"run={cfg.paths.output_dir}", name="evaluate", sub="eval"))["classification"]
    out = capsys.readouterr().out
    assert "per-class accuracy:" in out
    table = out.split("per-class accuracy:", 1)[1].splitlines()[1:]
    assert table[0].split() == ["class", "accuracy", "count"]
    rows = [line.split() for line in table[1:11]]
    assert [r[0] for r in rows] == [str(i) for i in range(10)]
    for name, acc, count in rows:
        assert float(acc) == round(report["per_class_accuracy"][name], 4)
        assert int(count) == report["per_class_count"][name]
    assert sum(report["per_class_count"].values()) == report["samples"]


def test_many_classes_show_the_worst_and_the_best_and_where_the_rest_is():
    accuracy = {f"kind{i}": (i * 37 % 100) / 100 for i in range(100)}
    results = {"run": "r", "checkpoint": "checkpoints/best.ckpt", "split": "val",
               "classification": {"accuracy": 0.5, "per_class_accuracy": accuracy,
                                  "per_class_count": {k: 3 for k in accuracy}}}
    text = format_results(results)
    assert "100 classes; the 5 worst and the 5 best, all in evaluation/val/report.json" in text
    rows = [line.split() for line in text.splitlines() if re.match(r"\s+\d+\s+kind\d+\s", line)]
    assert len(rows) == 2 * PER_CLASS_ENDS
    shown = [float(r[2]) for r in rows]
    assert shown[:PER_CLASS_ENDS] == [0.0, 0.01, 0.02, 0.03, 0.04] and shown[-1] == 0.99
    assert all(r[1] == f"kind{r[0]}" and r[3] == "3" for r in rows)  # index, name, accuracy, count
    assert "  ..." in text and len(text.splitlines()) < 30


def test_named_classes_without_counts_still_print():
    results = {"run": "r", "checkpoint": "c", "split": "test",
               "classification": {"per_class_accuracy": {"cat": 0.5, "dog": 1.0}}}
    text = format_results(results)
    assert re.search(r"0\s+cat\s+0\.5000", text) and re.search(r"1\s+dog\s+1\.0000", text)


@pytest.mark.slow
def test_an_ood_set_no_report_reads_is_refused_before_anything_is_written(cfg_factory):
    cfg = cfg_factory("logger=none", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                      "trainer.limit_val_batches=1")
    execute(cfg)
    with pytest.raises(ConfigError, match=r"ood=uniform is read by the anomaly report only, which this evaluation "
                                          r"does not run \(reports: classification"):
        evaluate(cfg_factory(f"run={cfg.paths.output_dir}", "ood=uniform", name="evaluate", sub="eval"))
    assert not (Path(cfg.paths.output_dir) / "evaluation" / "test").exists()
