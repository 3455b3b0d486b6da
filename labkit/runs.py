"""Run directories: unique names, atomic writes, saved configs, metrics, checkpoint lookup."""
from __future__ import annotations

import json
import logging
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
CKPT_DIR = "checkpoints"


def _run_dir_resolver(resume, log_dir, default):
    """``hydra.run.dir``: the run being resumed (``true`` = the newest run, a run dir, or a checkpoint
    inside one), else a new directory."""
    if resume in (None, False, "", "None", "null", "false", "False"):
        return default
    return str(resume_target(resume, log_dir)[0])


def latest_run(log_dir) -> Path:
    runs_dir = Path(log_dir) / "runs"
    candidates = sorted(p for p in runs_dir.glob("*") if (p / CONFIG_FILE).exists()) if runs_dir.exists() else []
    if not candidates:
        raise FileNotFoundError(f"resume=true found no run to resume in {runs_dir}")
    return candidates[-1]


def resume_target(resume, log_dir) -> tuple[Path, Path | None]:
    """(run dir, checkpoint to resume from or None if the run never saved one)."""
    if resume is True or str(resume).lower() == "true":
        run_dir, ckpt = latest_run(log_dir), None
    else:
        run_dir, ckpt = resolve_run(resume)
    if ckpt is None:
        last = run_dir / CKPT_DIR / "last.ckpt"
        ckpt = last if last.exists() else None
    return run_dir, ckpt


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("labkit_uid"):
        OmegaConf.register_new_resolver("labkit_uid", lambda: uuid.uuid4().hex[:6], use_cache=True)
    if not OmegaConf.has_resolver("labkit_run_dir"):
        OmegaConf.register_new_resolver("labkit_run_dir", _run_dir_resolver)


register_resolvers()


# ----- atomic files ------------------------------------------------------------------------------
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename: a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def save_figure(fig, path) -> Path:
    """Save a matplotlib figure as PNG through a temporary file, close it, and return the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def read_json(path) -> dict:
    with open(path) as f:
        return json.load(f)


# ----- run directories ---------------------------------------------------------------------------
def save_config(cfg: DictConfig, run_dir) -> Path:
    """Save the resolved config (without Hydra's own node) as ``<run>/config.yaml``."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    path = Path(run_dir) / CONFIG_FILE
    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(container)))
    return path


def load_config(run_dir) -> DictConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a labkit run directory? "
                                f"It should hold {CONFIG_FILE}, {METRICS_FILE} and {CKPT_DIR}/")
    return OmegaConf.load(path)


def resolve_run(path) -> tuple[Path, Path | None]:
    """(run dir, checkpoint or None) from a run directory or a checkpoint path."""
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"run {p} does not exist: give a run directory (logs/runs/...) or a .ckpt file")
    if p.is_file():
        run = p.parent.parent if p.parent.name == CKPT_DIR else p.parent
        return run, p
    return p, None


def find_checkpoint(run_dir, which: str = "best") -> Path:
    """The run's best (from metrics.json, else the newest non-last) or last checkpoint."""
    run_dir = Path(run_dir)
    ckdir = run_dir / CKPT_DIR
    if which not in ("best", "last"):
        p = Path(which)
        return p if p.is_absolute() else ckdir / which
    metrics = run_dir / METRICS_FILE
    if which == "best" and metrics.exists():
        best = read_json(metrics).get("best_checkpoint")
        if best and Path(best).exists():
            return Path(best)
    last = ckdir / "last.ckpt"
    if which == "last":
        if last.exists():
            return last
        raise FileNotFoundError(f"no last checkpoint in {ckdir}")
    others = sorted((p for p in ckdir.glob("*.ckpt") if p.name != "last.ckpt"), key=lambda p: p.stat().st_mtime)
    if others:
        return others[-1]
    if last.exists():
        return last
    raise FileNotFoundError(f"no checkpoint found in {ckdir}: did the run finish at least one epoch?")


# ----- sweep summary: moved to labkit.summary ----------------------------------------------------------
def __getattr__(name: str):
    """``labkit.runs.SweepSummary`` & co. still work; imported lazily because labkit.summary imports this module."""
    if name in ("SweepSummary", "summarize_sweep", "markdown_table"):
        from labkit import summary

        return getattr(summary, name)
    raise AttributeError(f"module 'labkit.runs' has no attribute {name!r}")
