"""``evaluate(cfg)``: reload a finished run from its own config and checkpoint, write its reports, print them, and send
their headline figures to the loggers the run was trained with."""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, open_dict

from labkit.core import files
from labkit.core.errors import ConfigError
from labkit.evaluation import get_report
from labkit.run import directory as runs

log = logging.getLogger("labkit")


def load_task(ckpt: str | Path, target: str):
    """Rebuild the task class ``target`` from a checkpoint alone, read with ``weights_only=True``.

    The file is opened once through :func:`labkit.core.safe_load.load_checkpoint` first, so a truncated file or one
    that would need arbitrary code gets labkit's clear error instead of a deep unpickling trace.
    """
    from labkit.core.safe_load import load_checkpoint

    load_checkpoint(ckpt)
    return get_class(target).load_from_checkpoint(str(ckpt), map_location="cpu", weights_only=True)


def load_run(run: str | Path, ckpt: str = "best", data_dir: str | None = None, batch_size: int | None = None):
    """(saved config, task, data module, checkpoint path) of a run directory or checkpoint file.

    The checkpoint is read from a snapshot (:func:`snapshot`): a run still training may replace its best checkpoint
    while it is read, and then the new best is taken."""
    run_dir, ckpt_path = runs.resolve_run(run)
    from labkit.run.startup import check_config_unedited

    check_config_unedited(run_dir, f"evaluate.py run={run}")
    saved = runs.load_config(run_dir)
    with snapshot(run_dir, ckpt_path, ckpt) as (ckpt_path, held):
        task = load_task(held, saved.task._target_)
    with open_dict(saved):
        if data_dir:
            saved.data.data_dir = str(data_dir)
        if batch_size:
            saved.data.eval_batch_size = int(batch_size)
    data = instantiate(saved.data)  # reports read plain (x, y) batches through data.loader(split)
    data.setup("test")
    return saved, task, data, Path(ckpt_path)


SNAPSHOT_TRIES = 5


@contextlib.contextmanager
def snapshot(run_dir: Path, given: Path | None, which: str):
    """(the checkpoint's path in the run, a private hard link to it) while the block reads it: a training run that
    writes a new best and deletes the old one cannot take the file away half-way (the link holds its content). The
    checkpoint is looked up again when it was replaced before the link was made (up to :data:`SNAPSHOT_TRIES` times);
    where hard links are not possible the file is copied."""
    import shutil

    for attempt in range(SNAPSHOT_TRIES):
        try:
            path = Path(given) if given is not None else runs.find_checkpoint(run_dir, which)
            held = files.temporary_path(path)  # a name the run's own clean-up leaves alone while this process lives
            try:
                os.link(path, held)
            except FileNotFoundError:
                raise
            except OSError:  # no hard links here (another filesystem, a read-only run): a private copy
                held = Path(tempfile.mkdtemp(prefix="labkit-eval-")) / path.name
                shutil.copyfile(path, held)
        except FileNotFoundError:
            if given is not None or attempt == SNAPSHOT_TRIES - 1:
                raise
            log.info("the best checkpoint was replaced while it was opened (the run is training): taking the new one")
            continue
        try:
            yield path, held
        finally:
            held.unlink(missing_ok=True)
            if held.parent.name.startswith("labkit-eval-"):
                shutil.rmtree(held.parent, ignore_errors=True)
        return


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Write the run's reports into ``<run>/evaluation/<split>/``.

    The reports are written into a fresh temporary folder beside it, which then replaces the previous evaluation
    all at once: a failure half-way leaves the previous evaluation as it was, never a mix of old and new files."""
    if cfg.split not in ("train", "val", "test"):
        raise ConfigError(f"split={cfg.split!r} is invalid: choose train, val or test")
    run_dir, _ = runs.resolve_run(cfg.run)  # checked before anything is read or written
    saved, task, data, ckpt = load_run(cfg.run, cfg.get("ckpt", "best"), cfg.get("data_dir"), cfg.get("batch_size"))
    names = list(cfg.get("reports") or type(task).evaluations)
    if not names:
        raise ConfigError(f"task {type(task).__name__} declares no evaluation reports ({type(task).__name__}.evaluations "
                          f"is empty): choose them with reports=[...], e.g. reports=[retrieval]")
    for name in names:
        get_report(name)  # an unknown report name fails before any work
    if cfg.get("ood") and "anomaly" not in names:  # silently unused, a user would believe OOD was measured
        raise ConfigError(f"ood={cfg.ood} is read by the anomaly report only, which this evaluation does not run "
                          f"(reports: {', '.join(names)}); it needs an autoencoder run, with reports=[anomaly] unless "
                          f"the task runs it by default")
    final = Path(run_dir) / "evaluation" / cfg.split
    results: dict[str, Any] = {"run": Path(run_dir).resolve().name, "checkpoint": runs.relative_to_run(ckpt, run_dir),
                               "split": cfg.split}
    task.eval()
    with files.staged_dir(final) as out_dir:
        for name in names:
            log.info("report: %s", name)
            results[name] = get_report(name)(task, data, cfg, out_dir)
        results = _relative_paths(results, out_dir, final.relative_to(run_dir), run_dir)
        files.write_json(out_dir / "report.json", results)
    print(format_results(results))
    log.info("reports written to %s", final)
    if cfg.get("loggers", True):
        from labkit.run.pictures import figures_in

        send_to_loggers(run_dir, saved, ckpt, headline_figures(results, cfg.split),
                        figures_in(final, f"evaluation/{cfg.split}", recursive=True))
    return results


def headline_figures(results: dict, split: str) -> dict[str, float]:
    """The figures of ``results`` that the run's loggers receive: each report's headlines and baselines (declared where
    it is registered, :func:`labkit.evaluation.logged_figures`), named ``<report>/<key>`` like a task's
    ``headline_metrics`` (``<report>/<split>/<key>`` for a split other than test)."""
    from labkit.evaluation import logged_figures

    out = {}
    for name, rep in results.items():
        if not isinstance(rep, dict):
            continue
        for key in logged_figures(name):
            value = rep.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{name}/{key}" if split == "test" else f"{name}/{split}/{key}"] = float(value)
    return out


def send_to_loggers(run_dir: Path, saved: DictConfig, ckpt: Path, figures: dict[str, float],
                    pictures: dict[str, Path] | None = None) -> None:
    """``figures`` to every logger of the run's config (TensorBoard's scalars and HParams tab beside the run's final
    figures, CSV, the same MLflow and W&B runs), through the run core's own path (:func:`labkit.run.records.send`).
    Only the figures of the run's best checkpoint, whose test figures the loggers hold: another checkpoint's stay in
    report.json. ``pictures`` (``{"evaluation/test/confusion_matrix.png": path}``): the reports' figures, as images
    (TensorBoard, W&B) and artifacts of the run's MLflow run (:func:`labkit.run.pictures.send_figures`). A logger
    that cannot be reached is a warning; the reports are written already."""
    if not (figures or pictures) or not isinstance(saved, DictConfig) or not saved.get("logger"):
        return
    try:
        best = runs.find_checkpoint(run_dir, "best")
    except Exception:  # no best checkpoint recorded (or readable): not the best, nothing sent
        best = None
    if best is None or Path(best).resolve() != Path(ckpt).resolve():
        log.info("loggers: not sent (%s is not the run's best checkpoint, whose figures the loggers hold)",
                 runs.relative_to_run(ckpt, run_dir))
        return
    from labkit.run import pictures as images
    from labkit.run import records
    from labkit.run.plan import Plan
    from labkit.tracking.reopen import reopened

    recorded = runs.read_metrics(run_dir)
    with reopened(run_dir, saved) as loggers:
        try:
            plan = Plan(saved, tuple(str(o) for o in saved.get("overrides") or ()), run_dir=Path(run_dir))
            if figures:
                records.send(loggers, plan, {**recorded, **figures}, figures, params=False)
            sent = images.send_figures(loggers, pictures or {}, step=int(recorded.get("global_step") or 0))
            if any(sent.values()):
                log.info("the run's loggers got the reports' figures: %s", ", ".join(
                    f"{n} to {name.removesuffix('Logger')}" for name, n in sent.items()))
        except Exception as e:  # the reports are written: the loggers' copy must not turn them into a failure
            log.warning("could not send the figures to the run's loggers: %s", e)
    if loggers:
        names = ", ".join(type(lg).__name__.removesuffix("Logger") for lg in loggers)
        log.info("the run's loggers (%s) got %d figure(s): %s", names, len(figures), ", ".join(figures))


def _relative_paths(obj, staging: Path, final: Path, run_dir: Path):
    """Paths that reports return as they will be after the swap, relative to the run directory (so that
    report.json stays true when the run is moved): ``evaluation/test/tsne_codes.png``."""
    if isinstance(obj, dict):
        return {k: _relative_paths(v, staging, final, run_dir) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relative_paths(v, staging, final, run_dir) for v in obj]
    if isinstance(obj, str) and obj.startswith(str(staging)):
        return (final / obj[len(str(staging)):].lstrip("/")).as_posix()
    if isinstance(obj, str) and os.path.isabs(obj):
        return runs.relative_to_run(obj, run_dir)
    return obj


PER_CLASS_LISTED = 20  # the console lists every class up to this many; beyond, the worst and the best few
PER_CLASS_ENDS = 5


def format_results(results: dict) -> str:
    lines = [f"run: {results['run']}", f"checkpoint: {results['checkpoint']}", f"split: {results['split']}"]
    for name, rep in results.items():
        if not isinstance(rep, dict):
            continue
        lines.append(f"\n[{name}]")
        for k, v in rep.items():
            if isinstance(v, float):
                lines.append(f"  {k:<32} {v:.4f}")
            elif isinstance(v, (int, str)):
                lines.append(f"  {k:<32} {v}")
        if isinstance(rep.get("per_class_accuracy"), dict) and rep["per_class_accuracy"]:
            where = f"evaluation/{results['split']}/report.json"
            lines += per_class_table(rep["per_class_accuracy"], rep.get("per_class_count") or {}, where)
    return "\n".join(lines)


def per_class_table(accuracy: dict, counts: dict, where: str) -> list[str]:
    """Per-class accuracy as a compact table (index, class name when it is not the index, accuracy, test samples):
    every class up to :data:`PER_CLASS_LISTED`, else the worst and the best :data:`PER_CLASS_ENDS`, with where the
    full list is."""
    rows = [(i, str(c), float(a), counts.get(c)) for i, (c, a) in enumerate(accuracy.items())]
    named = any(c != str(i) for i, c, _, _ in rows)
    if len(rows) <= PER_CLASS_LISTED:
        title, shown = "  per-class accuracy:", rows
    else:
        ranked = sorted(rows, key=lambda r: (r[2], r[0]))
        k = PER_CLASS_ENDS
        title = f"  per-class accuracy ({len(rows)} classes; the {k} worst and the {k} best, all in {where}):"
        shown = [*ranked[:k], None, *ranked[-k:]]
    width = min(max([len("class"), *(len(r[1]) for r in rows)]), 28) if named else 0
    index_width = max(len(str(len(rows) - 1)), 5 if not named else 1)
    head = f"    {'#' if named else 'class':>{index_width}}" + (f"  {'class':<{width}}" if named else "")
    out = [title, f"{head}  accuracy  count"]
    for row in shown:
        if row is None:
            out.append(f"    {'...':>{index_width}}")
            continue
        i, c, a, n = row
        label = f"    {i:>{index_width}}" + (f"  {c[:width]:<{width}}" if named else "")
        out.append(f"{label}  {a:>8.4f}  {n if n is not None else '':>5}")
    return out


# ----- the command: python evaluate.py, labkit-evaluate ---------------------------------------------------------------
USAGE = """Evaluate a finished run: ``python evaluate.py run=logs/runs/<run dir> [split=val] [ckpt=last]``.

Reloads the run's own config.yaml and checkpoint and writes reports (JSON, PNG) to ``<run>/evaluation/<split>``.
A bad value or file prints one paragraph (``error: ...``) and exits 1; ``--debug`` shows the full traceback.
"""


def main(cfg) -> None:
    """The Hydra job of ``python evaluate.py`` and ``labkit-evaluate``."""
    evaluate(cfg)


def cli(argv=None):
    """The command line (``argv``: the arguments, default ``sys.argv[1:]``): ``python evaluate.py`` in a checkout,
    ``labkit-evaluate`` after ``pip install``."""
    from labkit.cli.app import run
    from labkit.core.layout import CONF_DIR
    from labkit.run.validate import check_evaluate

    return run("evaluate", main, check_evaluate, help=True, doc=USAGE, config_dir=CONF_DIR, argv=argv)
