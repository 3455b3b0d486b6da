"""``python compare.py <run dirs, sweep dirs or globs> [--out DIR] [--x epoch|time]``: compare any runs side by side.

Writes ``comparison.md``, ``comparison.csv`` and ``validation_curves.png`` (the runs' validation curves overlaid,
from their ``history.csv``, per epoch or with ``--x time`` per wall-clock minute) to ``--out`` or a new
``compare/<timestamp>/`` folder under the runs' log dir, and prints the table. Columns: the settings that differ
between the runs (flattened config.yaml), the tasks' headline metrics, the final and best value of each monitored
metric, and the headline figures of the runs' evaluation reports (``evaluation/<split>/report.json``).
A sweep folder given as an argument also gets its summary rebuilt (summary.md/csv/png), e.g. after a killed sweep.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from labkit.core import console
from labkit.core.errors import ConfigError, LabkitError
from labkit.core.files import atomic_write_text, save_figure
from labkit.core.values import finite
from labkit.run import provenance
from labkit.run.directory import has_record
from labkit.tracking.summary import (
    RunRecord,
    cell_text,
    common_folder,
    csv_text,
    fitted_table,
    flat_config,
    headline_columns,
    informative_columns,
    internal_setting,
    load_record,
    monitor_of,
    print_summary,
    report_headlines,
    split_override,
    sweep_jobs,
    task_groups,
    unused_settings,
    wrap_lines,
)


class NotARunError(LabkitError, FileNotFoundError):
    """A path given to compare.py is not a run directory nor a folder of runs."""


# ----- which runs ---------------------------------------------------------------------------------------------
def _not_a_run(path, why: str) -> NotARunError:
    return NotARunError(
        f"{path} {why}: compare.py takes run directories (a folder with config.yaml and metrics.json, e.g. "
        f"logs/runs/<date>_<id>_<name>), sweep folders (logs/multirun/<date>_<id>, whose numbered job folders are "
        f"runs), folders of runs (logs/runs) or globs of them (quote the glob, e.g. 'logs/runs/2026-11-*').")


def _is_sweep(path: Path, jobs: list[Path]) -> bool:
    return (path / "multirun.yaml").is_file() or (bool(jobs) and all(j.name.isdigit() for j in jobs))


def collect(args: list[str]) -> tuple[list[tuple[Path, str]], list[Path]]:
    """([(run dir, label)], [sweep folders]) from the command-line paths, in the order given, without repeats."""
    runs: list[tuple[Path, str]] = []
    sweeps: list[Path] = []
    seen: set[Path] = set()

    def add(run: Path, label: str) -> None:
        key = run.resolve()
        if key not in seen:
            seen.add(key)
            runs.append((run, label))

    for arg in args:
        expanded = os.path.expanduser(arg)
        if glob.has_magic(expanded):
            paths = [Path(p) for p in sorted(glob.glob(expanded))]
            if not paths:
                raise _not_a_run(arg, "matches nothing")
        else:
            paths = [Path(expanded)]
        for path in paths:
            if not path.exists():
                raise _not_a_run(path, "does not exist")
            if path.is_file():
                run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
                if not has_record(run):
                    raise _not_a_run(path, "is a file outside any run directory")
                add(run, run.name)
            elif has_record(path):
                add(path, _label(path))
            else:
                jobs = sweep_jobs(path)
                if not jobs:
                    raise _not_a_run(path, "holds no run (no config.yaml or metrics.json in it or its sub-folders)")
                if _is_sweep(path, jobs):
                    sweeps.append(path)
                for job in jobs:
                    add(job, _label(job))
    return runs, sweeps


def _label(run: Path) -> str:
    """A sweep job is named ``<sweep>/<job>``, a run by its directory name."""
    return f"{run.parent.name}/{run.name}" if run.name.isdigit() else run.name


_STAMPED = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_([0-9a-z]+)(_.*)?$")


def short_label(label: str) -> str:
    """A run's name in the printed table: its unique id and name without the date and time
    (``2026-11-29_09-00-00_c3f2a1_lenet-digits`` -> ``c3f2a1_lenet-digits``); the list under the table gives the
    whole path."""
    parts = label.split("/")
    out = []
    for p in parts:
        m = _STAMPED.match(p)
        out.append(m.group(1) + (m.group(2) or "") if m else p)
    return "/".join(out)


def log_dir_of(run: Path) -> Path:
    run = run.resolve()
    if run.parent.name == "runs":
        return run.parent.parent
    if run.parent.parent.name == "multirun":
        return run.parent.parent.parent
    return run.parent


def default_out_dir(runs: list[Path]) -> Path:
    """``<log dir>/compare/<timestamp>``: the log dir the runs share, else $LABKIT_LOG_DIR or ./logs."""
    dirs = {log_dir_of(r) for r in runs}
    base = dirs.pop() if len(dirs) == 1 else Path(os.environ.get("LABKIT_LOG_DIR") or "logs")
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    out, n = base / "compare" / stamp, 1
    while out.exists():
        n += 1
        out = base / "compare" / f"{stamp}_{n}"
    return out


# ----- the table ------------------------------------------------------------------------------------------------
CLASS_GROUPS = ("model", "data", "task")  # groups whose ``_target_`` is a choice of the experiment (which network)


def swept_keys(records: list[RunRecord], keys: list[str]) -> list[str]:
    """The ``keys`` the runs' command lines set (``task.optimizer.lr=0.1``; ``model=lenet`` for ``model._target_``),
    in the order they were first given."""
    out: list[str] = []
    for r in records:
        for o in r.overrides:
            key = split_override(o)[0]
            for k in (key, f"{key}._target_"):
                if k in keys and k not in out:
                    out.append(k)
    return out


def differing_settings(records: list[RunRecord]) -> tuple[list[str], list[dict]]:
    """(keys whose config.yaml value differs between the runs it acts in, each run's flattened config).

    Order: the keys the runs' command lines set (swept: lr, batch size, epochs...) first, in the order given, then
    which model/data class, then the rest by name. Bookkeeping settings (files, loggers, display:
    :func:`~labkit.tracking.summary.internal_setting`) are never columns, nor a callback's ``_target_``: a callback
    some runs have and others not is one column (its class name, blank where absent), and its arguments are columns
    only where they differ between the runs that have it. A setting a run's task does not use
    (:func:`~labkit.tracking.summary.unused_settings`), or an argument of another model, data set or task class than
    the run's own, is blank for that run and does not make a column.
    """
    flat = [flat_config(OmegaConf.to_container(r.config, resolve=False)) if r.config is not None else {} for r in records]
    unused = [unused_settings(f, r.target) for f, r in zip(flat, records)]
    for f, off in zip(flat, unused):
        for key in off:
            del f[key]
    # a node with a _target_ outside the experiment's classes (a callback): its presence is one column, its name
    nodes = sorted({k[:-len("._target_")] for f in flat for k in f
                    if k.endswith("._target_") and k.split(".")[0] not in CLASS_GROUPS and not internal_setting(k)})
    for f in flat:
        for node in nodes:
            target = f.pop(f"{node}._target_", None)
            if isinstance(target, str):
                f[node] = target.rsplit(".", 1)[-1]
    keys = sorted({k for f in flat for k in f if not internal_setting(k)})

    def node_of(key: str) -> str | None:
        return next((n for n in nodes if key.startswith(n + ".")), None)

    def acts(f: dict, off: set, key: str) -> bool:
        if key in f:
            return True
        if key in off:
            return False
        node = node_of(key)
        if node is not None:
            return node in f  # the argument of a callback this run has, at its default
        group = key.split(".")[0]
        if group not in CLASS_GROUPS:
            return True  # absent: its default
        target = f"{group}._target_"
        return all(g.get(target) == f.get(target) for g in flat if key in g)  # same class, an older config

    differ = [k for k in keys if len({repr(f.get(k)) for f, off in zip(flat, unused) if acts(f, off, k)}) > 1]
    differ.sort(key=lambda k: not k.endswith("_target_"))  # which class first
    swept = swept_keys(records, differ)
    differ = swept + [k for k in differ if k not in swept]
    if any(f.get("task._target_") for f in flat):
        differ = [k for k in differ if k != "task._target_"]  # the task column names it
    for f in flat:  # a class path reads as its class name
        for k in differ:
            if k.endswith("_target_") and isinstance(f.get(k), str):
                f[k] = f[k].rsplit(".", 1)[-1]
    return differ, flat


def final_and_best(record: RunRecord, history: list[dict], metric: str, mode: str) -> tuple[Any, Any]:
    """The metric's value at the last epoch and its best value (metrics.json, else the per-epoch history)."""
    values = [r[metric] for r in history if finite(r.get(metric))]
    final = record.metrics.get(metric, values[-1] if values else None)
    best = record.metrics.get(f"best_{metric}")
    if best is None and values:
        best = min(values) if mode == "min" else max(values)
    return final, best


def build_table(runs: list[tuple[Path, str]]) -> dict:
    from labkit.callbacks.history import read_history  # imports Lightning: not needed to refuse a bad path quickly

    records = [load_record(r) for r, _ in runs]
    histories = [read_history(r) for r, _ in runs]
    differ, flat = differing_settings(records)
    prov, prov_differ = provenance.differing([r for r, _ in runs])
    heads = headline_columns(records)
    monitors: dict[str, str] = {}
    for rec in records:
        m, mode = monitor_of(rec.target)
        monitors.setdefault(m, mode)
    if "val/loss" not in monitors:
        monitors["val/loss"] = "min"
    report_heads = report_headlines()  # what each report declares at registration (labkit.evaluation)
    evals: list[str] = []
    rows = []
    for (run, label), rec, hist, conf, p in zip(runs, records, histories, flat, prov):
        row: dict[str, Any] = {"run": label, "task": rec.task_name, "status": rec.status}
        row.update({k: conf.get(k, "") for k in differ})
        row.update({k: p.get(k[len(provenance.COLUMN):], "") for k in prov_differ})
        row.update({k: rec.value(k) for k in heads})
        for m, mode in monitors.items():
            row[f"{m} final"], row[f"{m} best"] = final_and_best(rec, hist, m, mode)
        for split, report in sorted(rec.reports.items(), key=lambda kv: kv[0] != "test"):
            for name, keys in report_heads.items():
                part = report.get(name)
                if not isinstance(part, dict):
                    continue
                for key in keys:
                    col = f"{name}/{key}" if split == "test" else f"{split}:{name}/{key}"
                    if col in heads or part.get(key) is None:
                        continue
                    row[col] = part[key]
                    if col not in evals:
                        evals.append(col)
        row.update({"epochs": rec.metrics.get("epochs"), "wall_time_s": rec.metrics.get("wall_time_s"),
                    "path": str(run), "error": rec.metrics.get("error", "")})
        rows.append(row)
    metric_cols = [c for m in monitors for c in (f"{m} final", f"{m} best") if any(r.get(c) is not None for r in rows)]
    columns = ["run", "task", "status", *differ, *prov_differ, *heads, *metric_cols, *evals, "epochs", "wall_time_s"]
    if any(r["error"] for r in rows):
        columns.append("error")
    common, names = run_names([r for r, _ in runs])
    return {"rows": rows, "columns": columns, "records": records, "histories": histories, "common": common,
            "names": names,
            "monitors": list(monitors), "differ": differ, "provenance_differ": prov_differ, "evals": evals}


def _present(rows: list[dict], col: str) -> bool:
    return any(r.get(col) not in (None, "") for r in rows)


def run_names(runs: list[Path]) -> tuple[Path, list[str]]:
    """(the folder every run is in, each run's name relative to it, without the date and time of its directory
    name: ``c3f2a1_lenet-digits``, a sweep's job ``3``)."""
    common = common_folder(runs)
    names = []
    for run in runs:
        try:
            rel = Path(run).resolve().relative_to(common).as_posix()
        except ValueError:
            rel = str(run)
        names.append(short_label(rel))
    return common, names


def readable_tables(table: dict) -> str:
    """The comparison as markdown people can read: one table per task when the runs have several (each with that
    task's headline metrics), at most :data:`~labkit.tracking.summary.TABLE_WIDTH` characters wide. Columns: the run
    (named relative to the runs' common folder), then the settings that differ between its runs (the swept ones
    first), then the headline metrics and the rest; a column that is the same in every run of the table is said once
    above it, one another column derives (``test/error`` beside ``test/acc``) is left out (both stay in the CSV).
    The values of the columns that did not fit are listed under their table."""
    rows, records = table["rows"], table["records"]
    groups = task_groups(records)
    names = table.get("names") or [short_label(r["run"]) for r in rows]
    parts = []
    for task, idx in groups:
        grows = [dict(rows[i], run=names[i]) for i in idx]
        grecs = [records[i] for i in idx]
        heads = [c for c in headline_columns(grecs) if _present(grows, c)]
        mons = dict.fromkeys([*(monitor_of(r.target)[0] for r in grecs), "val/loss"])
        best = [f"{m} best" for m in mons if _present(grows, f"{m} best")]
        final = [f"{m} final" for m in mons if _present(grows, f"{m} final")]
        settings = [c for c in table["differ"] if _present(grows, c)]
        facts = [c for c in table["provenance_differ"] if _present(grows, c)]
        evals = [c for c in table["evals"] if c not in heads and _present(grows, c)]
        tail = ["epochs", "wall_time_s"] + (["error"] if _present(grows, "error") else [])
        columns = ["run", *settings, "status", *heads, *best, *final, *evals, *tail, *facts]
        columns, same = informative_columns(grows, columns, keep=("run", *heads),
                                            shared=settings + facts if len(groups) > 1 else ())
        priority = ["run", *settings, *heads, "status", *best, *evals, *final, "epochs", "wall_time_s", "error",
                    *facts]
        text = fitted_table(grows, columns, priority, "run")
        said = " ".join(f"{c}={cell_text(v)}" for c, v in same.items())
        if len(groups) > 1:
            title = f"### {task}: {len(grows)} run{'s' if len(grows) > 1 else ''}"
            text = title + "\n\n" + (f"same in these runs: {said}  \n\n" if said else "") + text
        elif said:
            text = f"same in every run: {said}  \n\n" + text
        parts.append(text)
    return "\n".join(parts)


# ----- the picture ---------------------------------------------------------------------------------------------
X_AXES = {"epoch": ("epoch", "epoch", 1.0), "time": ("wall_time_s", "wall-clock minutes (all sessions)", 60.0)}


def loss_kind(target: str) -> str:
    """What a task's ``*/loss`` measures (its class's ``loss_kind``: cross-entropy, MSE, triplet...)."""
    from labkit.tracking.summary import declaring_class

    return str(getattr(declaring_class(target), "loss_kind", "loss")) if target else "loss"


def plot_validation_curves(labels: list[str], histories: list[list[dict]], metrics: list[str], path,
                           x: str = "epoch", kinds: list[str] | None = None) -> Path | None:
    """One panel per validation metric (val/loss, val/acc, ...), one line per run, against the epoch or (``x="time"``)
    the run's wall-clock minutes at the end of each epoch: runs of different lengths and speeds compared by what they
    cost. A loss is drawn in one panel per kind (``kinds``: each run's, e.g. cross-entropy, MSE, triplet): losses of
    different kinds never share an axis."""
    column, xlabel, scale = X_AXES[x]
    kinds = kinds or ["loss"] * len(histories)
    panels: list[tuple[str, str | None]] = []
    for m in metrics:
        drawn = [k for h, k in zip(histories, kinds) if any(finite(r.get(m)) for r in h)]
        if m.split("/")[-1] == "loss" and len(set(drawn)) > 1:
            panels += [(m, k) for k in dict.fromkeys(drawn)]
        elif drawn:
            panels.append((m, None))
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ncols = min(len(panels), 3)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, 4.2 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (metric, kind) in zip(axes.flat, panels):
        for label, hist, k in zip(labels, histories, kinds):
            if kind is not None and k != kind:
                continue
            pts = [(r[column] / scale, r[metric]) for r in hist if finite(r.get(metric)) and finite(r.get(column))]
            if pts:
                ax.plot(*zip(*pts), "-o", markersize=3, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{metric} ({kind})" if kind else metric)
        ax.set_title(f"{metric} ({kind})" if kind else metric)
        if x == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


# ----- the command -----------------------------------------------------------------------------------------------
def compare(paths: list[str], out: str | Path | None = None, echo: bool = True, x: str = "epoch") -> dict:
    """Compare the runs behind ``paths``; returns the table (rows, columns) and the files written. ``x``: the curves'
    horizontal axis, ``epoch`` or ``time`` (wall-clock minutes)."""
    if x not in X_AXES:
        raise ConfigError(f"compare: x={x!r} is not an axis; valid: {', '.join(X_AXES)}")
    runs, sweeps = collect(paths)
    if not runs:
        raise _not_a_run(" ".join(paths), "names no run")
    for sweep in sweeps:
        if echo:
            print_summary(sweep)
        else:
            from labkit.tracking.summary import summarize_sweep

            summarize_sweep(sweep)
    table = build_table(runs)
    out_dir = Path(out) if out else default_out_dir([r for r, _ in runs])
    out_dir.mkdir(parents=True, exist_ok=True)
    labels, names = [label for _, label in runs], table["names"]
    kinds = [loss_kind(r.target) for r in table["records"]]
    png = plot_validation_curves(names, table["histories"], table["monitors"], out_dir / "validation_curves.png",
                                 x=x, kinds=kinds)
    no_history = [label for label, h in zip(labels, table["histories"]) if not h]
    lines = [f"runs compared: {len(runs)}, in {_shown_path(table['common'])}"]
    warning = provenance.data_warning(table["provenance_differ"])
    if warning:
        lines.append(warning)
    if no_history:
        lines.append("no per-epoch history (history.csv) in: " + ", ".join(no_history))
    preamble = "\n".join(f"{ln}  " for ln in lines) + "\n"
    md = preamble + "\n" + readable_tables(table)
    listed = []
    for name, r in zip(names, table["rows"]):
        try:
            rel = Path(r["path"]).resolve().relative_to(table["common"]).as_posix()
        except ValueError:
            rel = r["path"]
        listed.append(f"- {name}: {rel}" if rel != name else f"- {name}")
    md += f"\nruns (in {table['common']}):\n" + "\n".join(listed) + "\n"
    if png is not None:
        md += f"\n![validation curves]({png.name})\n"
    atomic_write_text(out_dir / "comparison.md", md)
    atomic_write_text(out_dir / "comparison.csv", csv_text(table["rows"], table["columns"] + ["path"]))
    if echo:
        written = ["comparison.md", "comparison.csv"] + ([png.name] if png is not None else [])
        print(wrap_lines(f"\nComparison ({_shown_path(out_dir / 'comparison.md')}):\n" + md.split("\n![")[0]))
        print(wrap_lines(f"written in {_shown_path(out_dir)}: {', '.join(written)}"
                         + ("" if png is not None else " (no validation curves: no run has a per-epoch history)")))
    table.update({"out_dir": out_dir, "png": png, "sweeps": sweeps})
    return table


def _shown_path(path: Path) -> str:
    """A path as printed: relative to the working directory when it is under it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=None, description="Compare labkit runs side by side: a table (markdown + CSV) of their differing "
        "settings and metrics, and their validation curves overlaid. Sweep folders also get their summary rebuilt.")
    parser.add_argument("paths", nargs="+", help="run directories, sweep folders, folders of runs, or globs")
    parser.add_argument("--out", default=None, help="output folder (default: <log dir>/compare/<timestamp>)")
    parser.add_argument("--x", default="epoch", choices=sorted(X_AXES),
                        help="the curves' horizontal axis: epoch (default) or time (wall-clock minutes, cumulative "
                        "over resumes): runs of different lengths compared by what they cost")
    args = parser.parse_args(argv)
    try:
        with console.settings():  # labkit's console settings while it runs (importing labkit sets none)
            compare(args.paths, args.out, x=args.x)
    except LabkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0

