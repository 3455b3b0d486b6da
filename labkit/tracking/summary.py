"""Task-aware tables of runs: the sweep summary (``summary.csv``, ``summary.md``, ``summary.png``) and the shared
pieces that ``compare.py`` (:mod:`labkit.tracking.compare`) builds on.

Each task class declares ``headline_metrics`` (:class:`labkit.tasks.base.LabTask`, ``("test/loss",)`` unless a task
says otherwise): keys of ``metrics.json`` (``test/acc``) or ``<report>/<key>`` of
``<run>/evaluation/test/report.json`` (``retrieval/map_at_r``), shown when evaluate.py has written them. Each
evaluation report declares its own headline figures where it is registered (:func:`report_headlines`). A sweep's
table shows the headline metrics of the tasks present, the sweeper's objective (``optimized_metric``), one column
per swept override (constants once above the table), status and the error of failed jobs; a job without
``metrics.json`` (a killed sweep) is "incomplete", a trial a search's pruner stopped is "pruned" (not a failure).

An Optuna search (``hparams_search=optuna``) also leaves ``study.json`` in the sweep folder (written by its sweeper,
:mod:`labkit.tracking.search`): each job's trial number, every trial of the study (those other processes ran too)
with its state, parameters and objective, the best trial, and Optuna's plots beside summary.md; the summary adds
them. Sweeps without it (older ones, ``-m`` grids) are summarised as before.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from labkit.core.files import atomic_write_text, read_json, save_figure
from labkit.core.values import finite
from labkit.core.values import flatten as _flatten
from labkit.run import provenance
from labkit.run.directory import has_record, read_metrics, read_saved_config

log = logging.getLogger("labkit")

SUMMARY_FILES = ("summary.csv", "summary.md", "summary.png")
STUDY_FILE = "study.json"  # an Optuna search's record in its sweep folder (labkit.tracking.search writes it)
# overrides a sweeper adds to each job that are not settings of the run (the Optuna trial's reporter callback)
HIDDEN_OVERRIDES = ("callbacks.optuna_trial",)
# statuses of a finished job that are not failures
NOT_FAILED = ("ok", "pruned")
METRIC_PREFIXES = ("train/", "val/", "test/", "best_")


def report_headlines() -> dict[str, tuple[str, ...]]:
    """The figures of each evaluation report that tables show (keys of its part of evaluation/<split>/report.json), by
    report name: what each report declares at registration (``@register(name, headlines=...)``, labkit.evaluation).
    Imports the report modules (torch) on the first call, never when this module is imported."""
    from labkit.evaluation import report_headlines as registered

    return registered()


# ----- numbers and tables -------------------------------------------------------------------------------------
def fmt(v: Any) -> str:
    """A table cell: 4 significant digits for floats (whole numbers from 10,000 up), integers as they are."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if abs(v) >= 1e4:
            return str(round(v))
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(fmt(x) for x in v) + "]"
    return str(v)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table whose cells are padded to their column's width, so that it also reads as plain text."""
    widths = column_widths(rows, columns)
    lines = ["| " + " | ".join(c.ljust(widths[c]) for c in columns) + " |",
             "|" + "|".join("-" * (widths[c] + 2) for c in columns) + "|"]
    lines += ["| " + " | ".join(cell_text(r.get(c, "")).ljust(widths[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({c: (r.get(c) if isinstance(r.get(c), str) else fmt(r.get(c))) for c in columns} for r in rows)
    return buf.getvalue()


# ----- readable tables: which settings, how wide --------------------------------------------------------------
TABLE_WIDTH = 120  # characters: a table wider than this moves its least important columns below it
# settings that never say anything about the experiment: where files live, how it is logged or displayed
INTERNAL_SETTINGS = ("paths.", "hydra.", "overrides", "resume", "logger", "expected.", "measured.", "requires",
                     "callbacks.progress_bar.", "callbacks.model_summary.", "callbacks.history.", "callbacks.run_summary.",
                     "callbacks.lr_monitor.", "callbacks.optuna_trial", "callbacks.finite_loss.",
                     "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
                     "trainer.logger", "task.projector", "task.log_images", "data.num_workers", "data.eval_batch_size",
                     "data.keep_on_device", "data.download", "reproduce")
INTERNAL_SUFFIXES = (".dirpath", ".save_dir", ".default_root_dir", "data_dir", "log_dir", "output_dir")
# settings that only act when another one says so: (key prefix, the setting it depends on, when it acts)
USED_ONLY_WHEN = (
    ("task.unfreeze_at_epoch", "task.freeze", lambda v: v not in (None, False, "")),
    ("task.unfreeze_lr_factor", "task.unfreeze_at_epoch", lambda v: v not in (None, "")),
    ("data.hflip", "data.augment", bool), ("data.color_jitter.", "data.augment", bool),
    ("data.pad", "data.augment", bool), ("data.erasing", "data.augment", bool),
    ("task.scheduler.", "task.scheduler._target_", lambda v: bool(v)),
)


def _list_cell(value: Any) -> Any:
    return "[" + ",".join(fmt(x) if not isinstance(x, (dict, list)) else str(x) for x in value) + "]" \
        if isinstance(value, list) else value


def flat_config(node: Any) -> dict[str, Any]:
    """A nested config (a run's, for tables of runs) as ``{"a.b.c": value}``; lists as one ``[x,y]`` value."""
    return _flatten(node, ".", _list_cell)


def internal_setting(key: str) -> bool:
    """A setting that is bookkeeping (files, loggers, display), never a column of a table of runs."""
    return key.startswith(INTERNAL_SETTINGS) or key.endswith(INTERNAL_SUFFIXES)


def task_parameters(target: str) -> frozenset[str] | None:
    """The arguments the task class accepts (:func:`labkit.run.signatures.of`: its own and its bases'), or None when
    it takes any or cannot be found."""
    from labkit.run import signatures

    try:
        return signatures.of(target).params
    except Exception:  # a run of a task whose module is gone still gets a row
        return None


def unused_settings(flat: dict[str, Any], target: str) -> set[str]:
    """The keys of a run's flattened config that its task does not use: a ``task.`` argument its class does not take,
    a setting that only acts with another one (:data:`USED_ONLY_WHEN`), tuple redrawing for a task of single images."""
    params = task_parameters(target)
    unused: set[str] = set()
    for key in flat:
        if params is not None and key.startswith("task."):
            arg = key.split(".")[1]
            if not arg.startswith("_") and arg != "defaults" and arg not in params:
                unused.add(key)
                continue
        for prefix, depends, acts in USED_ONLY_WHEN:
            if key.startswith(prefix) and key != depends and not acts(flat.get(depends)):
                unused.add(key)
        if key == "data.resample_tuples" and target:
            cls = declaring_class(target)
            mined = flat.get("task.miner") or any(k.startswith("task.miner.") for k in flat)
            if cls.sampling == "single" or mined:
                unused.add(key)
    return unused


def cell_text(v: Any) -> str:
    return (v if isinstance(v, str) else fmt(v)).replace("|", "\\|").replace("\n", " ")


def column_widths(rows: list[dict], columns: list[str]) -> dict[str, int]:
    return {c: max([len(c)] + [len(cell_text(r.get(c, ""))) for r in rows]) for c in columns}


def fit_columns(rows: list[dict], columns: list[str], priority: list[str], width: int = TABLE_WIDTH
                ) -> tuple[list[str], list[str]]:
    """(the columns shown, in ``columns`` order; the rest): columns are taken in ``priority`` order while the
    table stays within ``width`` characters (the first two always)."""
    widths = column_widths(rows, columns)
    chosen: set[str] = set()
    used = 1
    for i, c in enumerate([c for c in priority if c in widths] + [c for c in columns if c not in priority]):
        if i < 2 or used + widths[c] + 3 <= width:
            chosen.add(c)
            used += widths[c] + 3
    return [c for c in columns if c in chosen], [c for c in columns if c not in chosen]


def overflow_lines(rows: list[dict], hidden: list[str], label: str) -> str:
    """The values of the columns a table had no room for, one line per row (blank values left out)."""
    lines = []
    for r in rows:
        cells = [f"{c}={cell_text(r.get(c))}" for c in hidden if r.get(c) not in (None, "")]
        if cells:
            lines.append(f"- {r.get(label)}: " + ", ".join(cells))
    return ("\nnot in the table (width):\n" + "\n".join(lines) + "\n") if lines else ""


def fitted_table(rows: list[dict], columns: list[str], priority: list[str], label: str,
                 width: int = TABLE_WIDTH) -> str:
    """A markdown table at most ``width`` characters wide, then the values of the columns left out."""
    shown, hidden = fit_columns(rows, columns, priority, width)
    return markdown_table(rows, shown) + overflow_lines(rows, hidden, label)


def derivable(rows: list[dict], col: str, shown: list[str]) -> bool:
    """A column that another shown column already says: ``x/error`` next to ``x/acc`` (1 - accuracy), ``epochs``
    next to ``trainer.max_epochs`` when every run trained them all."""
    def same(a, b) -> bool:
        if a in (None, "") or b in (None, ""):
            return a in (None, "") and b in (None, "")
        return finite(a) and finite(b) and abs(a - b) < 1e-6
    if col.endswith("/error") and col[:-len("error")] + "acc" in shown:
        acc = col[:-len("error")] + "acc"
        return all(same(r.get(col), 1.0 - r[acc] if finite(r.get(acc)) else None) for r in rows)
    if col == "epochs" and "trainer.max_epochs" in shown:
        return all(same(r.get(col), r.get("trainer.max_epochs")) for r in rows)
    return False


def informative_columns(rows: list[dict], columns: list[str], keep: tuple[str, ...] | list[str] = (),
                        shared: tuple[str, ...] | list[str] = ()) -> tuple[list[str], dict[str, Any]]:
    """(the columns that tell the rows apart, {column: value} of those that do not): a column that is blank in every
    row, one with the same value in every row (said once above the table instead) and one another column derives
    (:func:`derivable`) is left out; ``keep`` (the run's name, the headline metrics) stays unless derivable. A
    column of ``shared`` (settings that differ between the tables of other tasks) is said once even for one row."""
    out, same = [], {}
    for c in columns:
        if c in keep:
            out.append(c)
            continue
        values = {cell_text(r.get(c, "")) for r in rows}
        if values == {""}:
            continue
        if (len(rows) > 1 or c in shared) and len(values) == 1:
            same[c] = rows[0].get(c)
            continue
        out.append(c)
    return [c for c in out if c == out[0] or not derivable(rows, c, out)], same


def wrap_lines(text: str, width: int = TABLE_WIDTH) -> str:
    """Every line at most ``width`` characters: a longer one (a list of facts, a warning, a path) is broken at spaces
    (a word longer than the line at ``/``) and continued indented; table rows are fitted to the width already."""
    import textwrap

    out = []
    for line in text.split("\n"):
        if len(line) <= width or line.startswith("|"):
            out.append(line)
            continue
        brk = "  " if line.endswith("  ") else ""  # a markdown line break stays at the end of the last piece
        pieces = textwrap.wrap(line.rstrip(), width - len(brk), subsequent_indent="    ", break_on_hyphens=False,
                               break_long_words=True)
        out += pieces[:-1] + [pieces[-1] + brk]
    return "\n".join(out)


def common_folder(paths: list[Path]) -> Path:
    """The deepest folder that holds every one of ``paths`` (a single run's: its parent)."""
    import os

    resolved = [str(Path(p).resolve()) for p in paths]
    if len(resolved) == 1:
        return Path(resolved[0]).parent
    return Path(os.path.commonpath(resolved))


def task_groups(records: list["RunRecord"]) -> list[tuple[str, list[int]]]:
    """(task name, indexes of its runs), tasks in the order they first appear."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(r.task_name, []).append(i)
    return list(groups.items())


# ----- one run, read back from its directory --------------------------------------------------------------------
@dataclass
class RunRecord:
    """What a run directory says about itself: config.yaml, metrics.json, its overrides and evaluation reports."""

    dir: Path
    config: DictConfig | None
    metrics: dict
    overrides: list[str]
    reports: dict[str, dict] = field(default_factory=dict)  # split -> report.json

    @property
    def status(self) -> str:
        return str(self.metrics.get("status", "?")) if self.metrics else "incomplete"

    @property
    def target(self) -> str:
        if self.config is not None:
            return str(OmegaConf.select(self.config, "task._target_", default="") or "")
        return ""

    @property
    def task_name(self) -> str:
        return self.target.rsplit(".", 1)[-1].replace("Task", "").lower() if self.target else "?"

    def value(self, key: str, split: str = "test"):
        """A metrics.json value, or ``<report>/<key>`` of evaluation/<split>/report.json; None when absent."""
        if key in self.metrics:
            return self.metrics[key]
        if key.startswith(METRIC_PREFIXES) or "/" not in key:
            return None
        report, name = key.split("/", 1)
        found = (self.reports.get(split) or {}).get(report)
        return found.get(name) if isinstance(found, dict) else None


def load_record(run_dir) -> RunRecord:
    run_dir = Path(run_dir)
    config = read_saved_config(run_dir)
    metrics = read_metrics(run_dir)
    overrides: list[str] = []
    hydra_overrides = run_dir / ".hydra" / "overrides.yaml"
    if hydra_overrides.is_file():
        try:
            overrides = [str(o) for o in OmegaConf.to_container(OmegaConf.load(hydra_overrides)) or []]
        except Exception:  # a damaged overrides.yaml: the record's own overrides are used
            overrides = []
    if not overrides:
        overrides = [str(o) for o in metrics.get("overrides") or []]
    overrides = [o for o in overrides if split_override(o)[0] not in HIDDEN_OVERRIDES]
    if isinstance(metrics.get("test/acc"), (int, float)) and "test/error" in metrics:
        # the error is 1 - accuracy, a fraction; runs of labkit before 0.2 recorded it in percent
        metrics["test/error"] = 1.0 - float(metrics["test/acc"])
    reports = {}
    for rep in sorted(run_dir.glob("evaluation/*/report.json")):
        try:
            reports[rep.parent.name] = read_json(rep)
        except (OSError, json.JSONDecodeError):
            continue
    return RunRecord(run_dir, config, metrics, overrides, reports)


def task_class(target: str):
    if not target:
        return None
    try:
        from hydra.utils import get_class

        return get_class(target)
    except Exception:  # a task module gone or broken: the row is kept, without its class's view
        return None


def declaring_class(target: str) -> type:
    """The task class ``target`` names, or :class:`labkit.tasks.base.LabTask` (whose defaults every task inherits)
    when it names none that can be imported: a run of a task whose module is gone still gets a row."""
    from labkit.tasks.base import LabTask  # imports torch: only once a table is built, as the task classes do

    cls = task_class(target)
    return cls if isinstance(cls, type) and issubclass(cls, LabTask) else LabTask


def headline_keys(target: str) -> tuple[str, ...]:
    """The task's declared ``headline_metrics`` (``("test/loss",)`` unless it says otherwise)."""
    return tuple(declaring_class(target).headline_metrics)


def monitor_of(target: str) -> tuple[str, str]:
    return tuple(declaring_class(target).monitor)


def headline_columns(records: list[RunRecord]) -> list[str]:
    """The headline metrics of the tasks present, in declaration order; report figures only where computed."""
    cols: list[str] = []
    for r in records:
        for key in headline_keys(r.target) if r.target else ():
            if key not in cols:
                cols.append(key)
    return [c for c in cols if c.startswith(METRIC_PREFIXES) or any(r.value(c) is not None for r in records)]


def split_override(o: str) -> tuple[str, str]:
    key, _, value = o.partition("=")
    return key.lstrip("+~"), value


def override_value(text: str):
    """A swept override's value for the table: numbers as numbers (rounded when shown), anything else as given."""
    try:
        return int(text) if text.lstrip("-").isdigit() else float(text) if any(c in text for c in ".eE") else text
    except ValueError:
        return text


def swept_and_constant(records: list[RunRecord]) -> tuple[list[str], dict[str, str]]:
    """(keys whose override differs between jobs, {key: value} shared by every job)."""
    per_job = [dict(split_override(o) for o in r.overrides) for r in records]
    keys: list[str] = []
    for d in per_job:
        keys += [k for k in d if k not in keys]
    swept = [k for k in keys if len({d.get(k) for d in per_job}) > 1]
    constant = {k: per_job[0][k] for k in keys if k not in swept and per_job}
    return swept, constant


def job_sort_key(path: Path):
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


# ----- the sweep summary ----------------------------------------------------------------------------------------
def sweep_jobs(sweep_dir) -> list[Path]:
    """The job directories of a sweep: every sub-directory that holds config.yaml, metrics.json or .hydra/."""
    sweep_dir = Path(sweep_dir)
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and (has_record(p) or (p / ".hydra").is_dir())]
    return sorted(jobs, key=job_sort_key)


def _objective(records: list[RunRecord], sweep_dir: Path) -> tuple[str | None, str | None]:
    """(optimized_metric, direction) of the sweep, or (None, None) when nothing was optimized."""
    metric = next((OmegaConf.select(r.config, "optimized_metric") for r in records
                   if r.config is not None and OmegaConf.select(r.config, "optimized_metric")), None)
    if not metric:
        return None, None
    direction = None
    for source in [sweep_dir / "multirun.yaml"] + [r.dir / ".hydra" / "hydra.yaml" for r in records]:
        if source.is_file():
            try:
                node = OmegaConf.load(source)
                direction = OmegaConf.select(node, "hydra.sweeper.direction", default=None)
                direction = direction or OmegaConf.select(node, "sweeper.direction", default=None)
            except Exception:  # a damaged multirun.yaml: the next source is asked
                direction = None
            if direction:
                break
    return str(metric), (str(direction) if direction else None)


def summarize_sweep(sweep_dir) -> list[dict]:
    """Write ``summary.csv``, ``summary.md`` and ``summary.png`` (headline metric per job) into the sweep folder
    and return its rows (numbers unformatted). Works on a finished or a killed sweep."""
    report = build_summary(sweep_dir)
    sweep_dir = Path(sweep_dir)
    atomic_write_text(sweep_dir / "summary.csv", csv_text(report["rows"], report["csv_columns"]))
    png = plot_bars(report["rows"], report["chart_columns"], sweep_dir / "summary.png",
                    title=f"sweep {sweep_dir.name}", label="label")
    md = report["preamble"] + ("\n" + fitted_table(report["rows"], report["columns"], report["priority"], "job")
                               if report["rows"] else "")
    if png is not None:
        md += f"\n![headline metrics per job]({png.name})\n"
    md += report["study_md"]
    atomic_write_text(sweep_dir / "summary.md", md)  # long facts stay whole here; print_summary wraps them
    report["png"] = png
    return report["rows"]


def read_study(sweep_dir) -> dict | None:
    """The Optuna search's ``study.json`` of a sweep folder, or None (no search, or an unreadable file)."""
    path = Path(sweep_dir) / STUDY_FILE
    if not path.is_file():
        return None
    try:
        study = read_json(path)
    except (OSError, json.JSONDecodeError) as e:
        log.warning("cannot read %s: %s", path, e)
        return None
    return study if isinstance(study, dict) else None


def build_summary(sweep_dir) -> dict:
    """The summary's rows, columns and the lines above the table (constants, objective, the study of a search)."""
    sweep_dir = Path(sweep_dir)
    records = [load_record(p) for p in sweep_jobs(sweep_dir)]
    study = read_study(sweep_dir)
    trial_of = {str(k): v for k, v in ((study or {}).get("jobs") or {}).items()}
    swept, constant = swept_and_constant(records)
    swept = [k for k in swept if not internal_setting(k)]
    metric, direction = _objective(records, sweep_dir)
    heads = headline_columns(records)
    prov, prov_differ = provenance.differing([r.dir for r in records])  # only what differs between the jobs
    objective_col = None
    if metric:
        objective_col = metric if metric in heads else f"{metric} (objective)"
    rows = []
    for r, facts in zip(records, prov):
        given = dict(split_override(o) for o in r.overrides)
        row: dict[str, Any] = {"job": r.dir.name, "status": r.status}
        if trial_of:
            row["trial"] = trial_of.get(r.dir.name)
        off = unused_settings(flat_config(OmegaConf.to_container(r.config, resolve=False)), r.target) if r.config else set()
        row.update({k: "" if k in off else override_value(given.get(k, "")) for k in swept})
        row.update({k: facts.get(k[len(provenance.COLUMN):], "") for k in prov_differ})
        if objective_col and objective_col not in heads:
            row[objective_col] = r.value(metric)
        row.update({k: r.value(k) for k in heads})
        row.update({"epochs": r.metrics.get("epochs"), "params": r.metrics.get("params"),
                    "wall_time_s": r.metrics.get("wall_time_s"), "overrides": " ".join(r.overrides),
                    "error": r.metrics.get("error", "")})
        if r.status == "pruned":  # stopped on purpose: the epochs it trained, no error
            stopped = r.metrics.get("stopped_at_epoch")
            row.update(epochs=stopped + 1 if isinstance(stopped, int) else None, error="")
        rows.append(row)
    chart_labels(rows, swept)
    columns = ["job", *(["trial"] if trial_of else []), "status", *swept, *prov_differ]
    if objective_col and objective_col not in heads:
        columns.append(objective_col)
    columns += heads + ["epochs", "params", "wall_time_s"]
    if any(r["error"] for r in rows):
        columns.append("error")
    chart = ([objective_col] if objective_col and objective_col not in heads else []) + heads
    # the table: what tells the jobs apart (the swept keys first), then the figures; what is the same in every job
    # is said once above it, what another column derives (test/error beside test/acc) is left out (both in the CSV)
    shown = ["job", *(["trial"] if trial_of else []), *swept, "status", *chart, "epochs", "params", "wall_time_s",
             *(["error"] if "error" in columns else []), *prov_differ]
    shown, same = informative_columns(rows, shown, keep=("job", "trial", *chart))
    constant = {**constant, **{k: fmt(v) for k, v in same.items() if k != "status"}}
    lines = [f"sweep: {sweep_dir}", f"jobs: {len(rows)}" + (f" ({_status_counts(rows)})" if rows else "")]
    if constant:
        lines.append("same in every job: " + " ".join(f"{k}={v}" for k, v in constant.items()))
    warning = provenance.data_warning(prov_differ)
    if warning:
        lines.append(warning)
    if metric:
        best = _best(rows, objective_col or metric, direction)
        lines.append(f"objective: {metric}" + (f" ({direction})" if direction else "")
                     + (f", best job {best['job']} = {fmt(best[objective_col or metric])}" if best else ""))
    tasks = sorted({r.task_name for r in records if r.target})
    if tasks:
        lines.append("tasks: " + ", ".join(tasks))
    if study:
        lines += study_lines(study)
    priority = ["job", "trial", *swept, *chart, "status", "epochs", "wall_time_s", "params", "error", *prov_differ]
    return {"rows": rows, "columns": shown, "all_columns": columns, "priority": priority,
            "csv_columns": [c for c in columns if c != "error"] + ["overrides", "error"],
            "preamble": "\n".join(f"{ln}  " for ln in lines) + "\n",
            "chart_columns": chart, "records": records, "study": study,
            "study_md": study_markdown(study, sweep_dir) if study else ""}


# ----- an Optuna search's study ---------------------------------------------------------------------------------
def study_lines(study: dict) -> list[str]:
    """The lines about the search's study above the table: its trials by state, the best trial."""
    lines = [f"study: {study.get('study_name')} ({study.get('storage')}): "
             f"{tally_text(study.get('tally') or {}, study.get('n_trials'))}"
             f"; pruner {study.get('pruner')} on {study.get('monitor')}"]
    best = study.get("best")
    if best:
        params = " ".join(f"{k}={fmt(v)}" for k, v in (best.get("params") or {}).items())
        lines.append(f"best trial: {best.get('number')}, {study.get('optimized_metric')} = {fmt(best.get('value'))}"
                     + (f" ({params})" if params else ""))
    else:
        lines.append("best trial: none yet (no complete trial)")
    return lines


def tally_text(tally: dict, n_trials: Any, verb: str = "") -> str:
    """``18 of 18 trials (12 complete, 5 pruned, 1 failed)``: the trials counted towards ``n_trials`` by state, and
    the failed ones that do not count (their process was gone, or a race asked them beyond ``n_trials``)."""
    states = ", ".join(f"{tally[s]} {s}" for s in ("complete", "pruned", "failed", "running") if tally.get(s))
    text = f"{tally.get('total', 0)} of {n_trials} trials{' ' + verb if verb else ''}" + (f" ({states})" if states
                                                                                             else "")
    extra = [f"{tally['abandoned']} failed as their process was gone" if tally.get("abandoned") else "",
             f"{tally['discarded']} discarded unrun (asked beyond n_trials)" if tally.get("discarded") else ""]
    extra = [e for e in extra if e]
    return text + (f", and not counted: {', '.join(extra)}" if extra else "")


def study_rows(study: dict, sweep_dir: Path) -> tuple[list[dict], list[str]]:
    """(rows, columns) of every trial of the study: state, objective, parameters, epochs reported, its run."""
    params: list[str] = []
    rows = []
    for t in study.get("trials") or []:
        for k in t.get("params") or {}:
            if k not in params:
                params.append(k)
        run = str(t.get("run_dir") or "")
        if run:  # this sweep's job by its number, another worker's run relative to the folder of the sweeps
            for base in (sweep_dir, sweep_dir.parent):
                try:
                    run = Path(run).relative_to(base).as_posix()
                    break
                except ValueError:
                    continue
        state = str(t.get("state"))
        rows.append({"trial": t.get("number"), "state": state if t.get("counts", True) else f"{state} (not counted)",
                     "objective": t.get("value") if state == "complete" else None,  # a pruned one's is its last epoch's
                     **(t.get("params") or {}), "epochs": t.get("epochs"), "run": run, "note": t.get("note") or ""})
    return rows, ["trial", "state", "objective", *params, "epochs", "run", "note"]


def study_markdown(study: dict, sweep_dir: Path) -> str:
    """summary.md's section about the study: every trial (also those of other workers), Optuna's plots."""
    rows, columns = study_rows(study, Path(sweep_dir))
    params = columns[3:-3]
    shown, same = informative_columns(rows, ["trial", "run", *params, "state", "objective", "epochs", "note"],
                                      keep=("trial", "objective"))
    said = " ".join(f"{k}={cell_text(v)}" for k, v in same.items())
    text = (f"\n## Study {study.get('study_name')}: every trial\n\nobjective: {study.get('optimized_metric')} "
            f"({study.get('direction')}); run: its job folder in this sweep, else its folder under "
            f"{Path(sweep_dir).parent}  \n" + (f"same in every trial: {said}  \n" if said else "") + "\n"
            + fitted_table(rows, shown, ["trial", "run", "objective", *params, "state", "epochs", "note"], "trial"))
    titles = {"history": "optimization history", "importances": "parameter importances", "slice": "slice plot"}
    for name, file in (study.get("plots") or {}).items():
        text += f"\n![{titles.get(name, name)}]({file})\n"
    for note in study.get("notes") or []:
        text += f"\n{note}  \n"
    return text


def _status_counts(rows: list[dict]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def _best(rows: list[dict], col: str, direction: str | None):
    vals = [r for r in rows if finite(r.get(col))]
    if not vals:
        return None
    pick = min if (direction or "").startswith("min") else max
    return pick(vals, key=lambda r: r[col])


def unit_of(metric: str) -> str:
    """The unit a figure is shown in (every accuracy, error and retrieval figure is a fraction)."""
    name = metric.split("/")[-1].split(" ")[0]
    if metric.endswith("wall_time_s") or name.endswith("_s"):
        return "seconds"
    if name in ("acc", "error", "top5", "accuracy", "auroc") or name.startswith(("precision", "map_at", "acc")):
        return "fraction (0-1)"
    if "loss" in name or "mse" in name:
        return "loss"
    return ""


def plot_bars(rows: list[dict], columns: list[str], path, title: str = "", label: str = "job",
              max_panels: int = 4) -> Path | None:
    """A bar chart per metric column (one bar per row); None when no row has a value to show."""
    columns = [c for c in columns if any(finite(r.get(c)) for r in rows)][:max_panels]
    if not columns:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [str(r[label]) for r in rows]
    label_in = min(0.075 * max(map(len, names)), 4.5)  # room for the job labels, in inches
    fig, axes = plt.subplots(1, len(columns), figsize=(label_in + 3.2 * len(columns), 0.45 * len(rows) + 1.3),
                             sharey=True, squeeze=False)
    for ax, col in zip(axes[0], columns):
        vals = [r.get(col) if finite(r.get(col)) else 0.0 for r in rows]
        colors = ["tab:blue" if finite(r.get(col)) else "lightgray" for r in rows]
        bars = ax.barh(range(len(rows)), vals, color=colors)
        for bar, r in zip(bars, rows):
            ax.annotate(" " + (fmt(r.get(col)) if finite(r.get(col)) else str(r.get("status", "n/a"))),
                        (bar.get_width(), bar.get_y() + bar.get_height() / 2), ha="left", va="center", fontsize=8)
        ax.set_title(col, fontsize=9)
        ax.set_xlabel(unit_of(col), fontsize=8)
        ax.margins(x=0.25)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_yticks(range(len(rows)))
    axes[0, 0].set_yticklabels(names, fontsize=8)
    axes[0, 0].invert_yaxis()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def chart_labels(rows: list[dict], swept: list[str]) -> None:
    """Add a ``label`` to each row: the job number and its swept values (``0 task=siamese``)."""
    for r in rows:
        r["label"] = " ".join([str(r["job"])] + [f"{k.split('.')[-1]}={fmt(r[k])}" for k in swept if r.get(k) != ""])


# ----- the Hydra callback -----------------------------------------------------------------------------------------
try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object


def print_summary(sweep_dir) -> list[dict]:
    """Rebuild the sweep's summary files and print the table; returns the rows."""
    sweep_dir = Path(sweep_dir)
    rows = summarize_sweep(sweep_dir)
    text = (sweep_dir / "summary.md").read_text().replace("![headline metrics per job](summary.png)",
                                                          f"bar chart: {sweep_dir / 'summary.png'}")
    text = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", lambda m: f"{m.group(1)}: {sweep_dir / m.group(2)}", text)
    print(wrap_lines(f"\nSweep summary ({sweep_dir / 'summary.md'}):\n" + text))
    return rows


class SweepSummary(_HydraCallback):
    """Hydra callback: after a multirun, write and print the summary; exit non-zero if any job failed (a trial a
    search pruned did not fail)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():  # nothing was launched (e.g. a search whose study already had its trials)
            return
        rows = print_summary(sweep_dir)
        failed = [r["job"] for r in rows if r["status"] not in NOT_FAILED]
        if failed:
            raise SystemExit(f"{len(failed)} of {len(rows)} sweep jobs failed (jobs {', '.join(failed)}); "
                             f"see {sweep_dir / 'summary.md'}")
