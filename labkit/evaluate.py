"""``evaluate(cfg)``: reload a finished run from its own config and checkpoint and write its reports."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, open_dict

from labkit import runs
from labkit.errors import ConfigError
from labkit.evaluation import get_report

log = logging.getLogger("labkit")


def load_task(ckpt: str | Path, target: str):
    """Rebuild the task class ``target`` from a checkpoint alone, read with ``weights_only=True``.

    The file is opened once through :func:`labkit.safe_load.load_checkpoint` first, so a truncated file or one
    that would need arbitrary code gets labkit's clear error instead of a deep unpickling trace.
    """
    from labkit.safe_load import load_checkpoint

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
    data = instantiate(saved.data)
    data.sampling = "single"
    data.setup("test")
    return saved, task, data, Path(ckpt_path)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    if cfg.split not in ("train", "val", "test"):
        raise ConfigError(f"split={cfg.split!r} is invalid: choose train, val or test")
    saved, task, data, ckpt = load_run(cfg.run, cfg.get("ckpt", "best"), cfg.get("data_dir"), cfg.get("batch_size"))
    run_dir = runs.resolve_run(cfg.run)[0]
    out_dir = Path(run_dir) / "evaluation" / cfg.split
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(cfg.get("reports") or getattr(task, "evaluations", ("classification",)))
    results: dict[str, Any] = {"run": str(run_dir), "checkpoint": str(ckpt), "split": cfg.split}
    task.eval()
    for name in names:
        log.info("report: %s", name)
        results[name] = get_report(name)(task, data, cfg, out_dir)
    runs.write_json(out_dir / "report.json", results)
    print(format_results(results))
    log.info("reports written to %s", out_dir)
    return results


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
