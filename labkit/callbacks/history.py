"""Per-epoch history without TensorBoard: ``<run>/history.csv``, ``<run>/learning_curves.png`` and one line per
epoch in train.log.

:class:`History` appends one row per training epoch (epoch, step, every ``train/`` and ``val/`` epoch metric, the
learning rate, wall time) as the run trains, flushing each row, so the file survives a kill. A resumed run
continues the same file: rows of epochs the checkpoint had not reached are dropped first, so no epoch appears
twice, and the row of the checkpoint's own epoch, kept in the checkpoint, is restored if a kill came between the
checkpoint and the row. ``epoch`` counts from 0, like Lightning's epochs and the ``epochNNN.ckpt`` checkpoint names.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import time
from pathlib import Path

import pytorch_lightning as pl

from labkit.core.files import atomic_write_text, save_figure
from labkit.core.values import finite

log = logging.getLogger("labkit")

HISTORY_FILE = "history.csv"
CURVES_FILE = "learning_curves.png"
FIXED_COLUMNS = ["epoch", "step", "lr", "epoch_time_s", "wall_time_s"]


# ----- reading and writing the CSV ---------------------------------------------------------------------------
def _number(text: str):
    if text is None or text == "":
        return None
    try:
        v = float(text)
    except ValueError:
        return text
    return int(v) if v.is_integer() and "." not in text and "e" not in text.lower() else v


def read_csv_rows(path) -> tuple[list[str], list[dict]]:
    """(header, rows) of a CSV with numbers parsed; a half-written last line (a kill mid-write) is dropped."""
    text = Path(path).read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text))
    header = list(reader.fieldnames or [])
    rows = [{k: _number(v) for k, v in row.items() if k is not None} for row in reader]
    return header, [r for r in rows if isinstance(r.get("epoch"), int)]


def read_history(run_dir) -> list[dict]:
    """The per-epoch rows of a run: ``history.csv``, else Lightning's CSVLogger file (``csv/metrics.csv``,
    condensed to one row per epoch); ``[]`` when the run has neither."""
    run_dir = Path(run_dir)
    if (run_dir / HISTORY_FILE).exists():
        return read_csv_rows(run_dir / HISTORY_FILE)[1]
    for path in sorted(run_dir.glob("csv/**/metrics.csv")):
        by_epoch: dict[int, dict] = {}
        for row in read_csv_rows(path)[1]:
            merged = by_epoch.setdefault(row["epoch"], {})
            merged.update({k: v for k, v in row.items() if v is not None and not k.endswith("_step")})
        rows = []
        for epoch in sorted(by_epoch):
            row = {k[: -len("_epoch")] if k.endswith("_epoch") else k: v for k, v in by_epoch[epoch].items()}
            rows.append(row)
        return rows
    return []


def truncate_history(path, first_epoch: int) -> int:
    """Drop the rows with ``epoch >= first_epoch`` (epochs a resumed run trains again); returns how many."""
    path = Path(path)
    if not path.exists():
        return 0
    header, rows = read_csv_rows(path)
    keep = [r for r in rows if r["epoch"] < first_epoch]
    dropped = len(rows) - len(keep)
    if dropped or not path.read_text().endswith("\n") or not header:
        _rewrite(path, header, keep)
    return dropped


def _rewrite(path: Path, header: list[str], rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, extrasaction="ignore")
    if header:
        writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in r.items()} for r in rows)
    atomic_write_text(path, buf.getvalue())


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return v


def append_row(path, row: dict) -> None:
    """Append ``row`` to the CSV at ``path`` (flushed and fsynced); a row with new columns rewrites the file once
    with the wider header."""
    path = Path(path)
    header = read_csv_rows(path)[0] if path.exists() and path.stat().st_size else []
    if not header or any(k not in header for k in row):
        old = read_csv_rows(path)[1] if header else []
        header = header + [k for k in row if k not in header]
        _rewrite(path, header, old)
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=header, extrasaction="ignore").writerow({k: _cell(v) for k, v in row.items()})
        f.flush()
        os.fsync(f.fileno())


# ----- the callback --------------------------------------------------------------------------------------------
class History(pl.Callback):
    """Write ``<dirpath>/history.csv`` as the run trains and ``learning_curves.png`` when it ends (rank 0 only).

    Args:
        dirpath: the run directory (``${paths.output_dir}``).
        plot: write ``learning_curves.png`` at the end of fit.
    """

    def __init__(self, dirpath: str, plot: bool = True):
        self.dirpath = Path(dirpath)
        self.plot = plot
        self._epoch_start = self._fit_start = time.time()
        self._wall_offset = 0.0
        self._val_ran = False
        # the newest row, saved in every checkpoint: a run killed after an end-of-epoch checkpoint but before that
        # epoch's row reached history.csv gets the row back (its validation metrics at least) when it resumes
        self._pending: dict | None = None
        self._restored: dict | None = None

    @property
    def path(self) -> Path:
        return self.dirpath / HISTORY_FILE

    def state_dict(self) -> dict:
        return {"row": dict(self._pending)} if self._pending else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = state_dict.get("row")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after the checkpoint's training state is restored: current_epoch is the first epoch this fit trains
        if not trainer.is_global_zero:
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        first = trainer.current_epoch
        dropped = truncate_history(self.path, first)
        if dropped:
            log.info("history: dropped %d row(s) of epochs >= %d that the checkpoint had not reached", dropped, first)
        rows = read_csv_rows(self.path)[1] if self.path.exists() else []
        restored, self._restored = self._restored, None
        if restored and restored.get("epoch") == first - 1 and all(r["epoch"] != first - 1 for r in rows):
            append_row(self.path, restored)
            rows.append(restored)
            log.info("history: restored the row of epoch %d from the checkpoint", first - 1)
        last = rows[-1].get("wall_time_s") if rows else None
        self._wall_offset = float(last) if isinstance(last, (int, float)) else 0.0
        self._fit_start = time.time()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_start = time.time()
        self._val_ran = False

    def on_validation_end(self, trainer, pl_module) -> None:
        # before the end-of-epoch checkpoints (Lightning runs checkpoint callbacks last): keep what is known so far
        if not trainer.sanity_checking:
            self._val_ran = True
            self._pending = self._row(trainer, ("val/",))

    def _row(self, trainer: pl.Trainer, prefixes: tuple[str, ...]) -> dict:
        now = time.time()
        row: dict = {"epoch": trainer.current_epoch, "step": trainer.global_step, "lr": _learning_rate(trainer),
                     "epoch_time_s": round(now - self._epoch_start, 3),
                     "wall_time_s": round(self._wall_offset + now - self._fit_start, 3)}
        for key, value in sorted(trainer.callback_metrics.items()):
            if key.startswith(prefixes) and not key.endswith("_step"):
                name = key[: -len("_epoch")] if key.endswith("_epoch") else key
                try:
                    row[name] = float(value)
                except (TypeError, ValueError):
                    continue
        return row

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # runs after the epoch's validation, with the epoch-aggregated train metrics in callback_metrics
        row = self._row(trainer, ("train/", "val/") if self._val_ran else ("train/",))
        self._pending = row
        if not trainer.is_global_zero:
            return
        append_row(self.path, row)
        of = f" of {trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        shown = [k for k in row if "/" in k] + ["lr", "step", "epoch_time_s"]
        log.info("epoch %d (%d%s): %s", trainer.current_epoch, trainer.current_epoch + 1, of,
                 "  ".join(f"{k} {_short(row[k])}" for k in shown if row.get(k) is not None))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._draw(trainer, pl_module)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._draw(trainer, pl_module)  # a run that fails (or is interrupted) still shows its curves so far

    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not (self.plot and trainer.is_global_zero and self.path.exists()):
            return
        monitor = pl_module.monitor[0]  # LabTask declares it
        try:
            plot_learning_curves(read_csv_rows(self.path)[1], monitor, self.dirpath / CURVES_FILE)
        except Exception as e:  # a picture must never fail a finished run
            log.warning("could not draw %s: %s", CURVES_FILE, e)


def _learning_rate(trainer: pl.Trainer):
    for opt in trainer.optimizers:
        for group in opt.param_groups:
            return float(group["lr"])
    return None


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# ----- the picture -----------------------------------------------------------------------------------------------
def curve_panels(rows: list[dict], monitor: str) -> list[str]:
    """Metric names (without train/ or val/) shown, one panel each: every per-epoch metric the task logged (the
    ``train/`` and ``val/`` columns with a value), the loss first, then the monitored metric, then accuracy-like ones
    (``acc``, ``triplet_acc``), then the rest in the history's order."""
    names: list[str] = []
    for row in rows:
        for key, value in row.items():
            if key.startswith(("train/", "val/")) and finite(value):
                name = key.split("/", 1)[1]
                if name not in names:
                    names.append(name)
    watched = monitor.split("/", 1)[-1]
    return sorted(names, key=lambda n: (n != "loss", n != watched, "acc" not in n))


PANELS_PER_ROW = 3


def plot_learning_curves(rows: list[dict], monitor: str, path) -> Path | None:
    """One panel per metric the task logged (:func:`curve_panels`: the loss, the monitored metric, accuracy-like
    ones, the rest), train and validation per epoch, at most three panels a row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = curve_panels(rows, monitor)
    if not panels:
        return None
    ncols = min(len(panels), PANELS_PER_ROW)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 4 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, panels):
        for stage, style in (("train", "-o"), ("val", "-s")):
            pts = [(r["epoch"], r[f"{stage}/{metric}"]) for r in rows if finite(r.get(f"{stage}/{metric}"))]
            if pts:
                ax.plot(*zip(*pts), style, label=f"{stage}/{metric}", markersize=3)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)
