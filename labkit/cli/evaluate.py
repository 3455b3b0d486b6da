"""``evaluate(cfg)``: reload a finished run from its own config and checkpoint and write its reports."""
from __future__ import annotations

import logging
import os
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
    """(saved config, task, data module, checkpoint path) of a run directory or checkpoint file."""
    run_dir, ckpt_path = runs.resolve_run(run)
    saved = runs.load_config(run_dir)
    ckpt_path = ckpt_path or runs.find_checkpoint(run_dir, ckpt)
    task = load_task(ckpt_path, saved.task._target_)
    with open_dict(saved):
        if data_dir:
            saved.data.data_dir = str(data_dir)
        if batch_size:
            saved.data.eval_batch_size = int(batch_size)
    data = instantiate(saved.data)  # reports read plain (x, y) batches through data.loader(split)
    data.setup("test")
    return saved, task, data, Path(ckpt_path)


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
    return results


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
    return "\n".join(lines)
