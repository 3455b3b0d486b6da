"""What produced a run: the code, the libraries, the machine and the data, written to ``<run>/provenance.json``.

One entry per session (a resume adds one), so a run continued on another machine or checkout says so:

- ``code``: labkit's version and, when labkit is imported from a git checkout, the commit, the branch and whether
  tracked files had uncommitted changes (``dirty``; their diff is saved as ``provenance.diff``, cut at 1 MB);
- ``versions``: Python and the libraries whose version can change a figure (torch, torchvision, Lightning, Hydra,
  OmegaConf, numpy, scikit-learn, faiss), read from the installed packages' metadata;
- ``machine``: host, platform, CPU model and count, torch's thread count, the accelerator and devices actually used
  (names, CUDA and cuDNN versions on a GPU), the precision and whether deterministic algorithms were on;
- ``data``: every dataset file or folder the data module reads (:meth:`labkit.data.LabDataModule.sources`) with its
  size and content hash (:mod:`labkit.core.fingerprint`, cached under ``paths.cache_dir``);
- ``started``/``ended`` times.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from labkit.core.fingerprint import Fingerprints
from labkit.run import directory, rendezvous

DIFF_LIMIT = 1 << 20
PACKAGES = ("labkit", "torch", "torchvision", "pytorch-lightning", "hydra-core", "omegaconf", "numpy", "scikit-learn",
            "faiss-cpu", "faiss-gpu")


def _git(repo: Path, *args: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def code(source: Path | None = None) -> tuple[dict[str, Any], str]:
    """(the code's record, the diff of its uncommitted tracked changes or '')."""
    source = source or Path(__file__).resolve().parents[1]  # the labkit package this run imports
    try:
        version = importlib.metadata.version("labkit")
    except importlib.metadata.PackageNotFoundError:
        version = None
    out: dict[str, Any] = {"labkit": version, "source": str(source)}
    top = _git(source, "rev-parse", "--show-toplevel")
    if not top:
        return out, ""
    diff = _git(source, "diff", "HEAD", "--no-color") or ""
    out.update({"git_root": top.strip(), "commit": (_git(source, "rev-parse", "HEAD") or "").strip() or None,
                "branch": (_git(source, "rev-parse", "--abbrev-ref", "HEAD") or "").strip() or None,
                "dirty": bool(diff.strip())})
    return out, diff


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(trainer) -> dict[str, Any]:
    import torch

    accelerator = type(trainer.accelerator).__name__.replace("Accelerator", "").lower()
    out: dict[str, Any] = {"host": socket.gethostname(), "platform": platform.platform(), "cpu": _cpu_model(),
                           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                           "accelerator": accelerator, "devices": trainer.num_devices, "num_nodes": trainer.num_nodes,
                           "precision": str(trainer.precision),
                           "deterministic": torch.are_deterministic_algorithms_enabled()}
    if accelerator == "cuda" and torch.cuda.is_available():
        out["device_names"] = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        out["cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version()
    return out


def data(sources, cache_dir) -> list[dict[str, Any]]:
    prints = Fingerprints(cache_dir)
    try:
        return [prints.fingerprint(p) for p in sources]
    finally:
        prints.save()


def session(run_dir: Path, trainer, datamodule, cache_dir) -> dict[str, Any]:
    """This session's record (and ``provenance.diff`` when the checkout is dirty)."""
    record_code, diff = code()
    if diff:
        text = diff if len(diff) <= DIFF_LIMIT else diff[:DIFF_LIMIT] + "\n... (cut at 1 MB)\n"
        record_code["diff"] = directory.write_diff(run_dir, text)
    return {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "ended": None, "code": record_code,
            "versions": versions(), "machine": machine(trainer), "data": data(datamodule.sources(), cache_dir),
            "argv": rendezvous.command_line()[1:]}


def start(run_dir: Path, trainer, datamodule, cache_dir) -> dict[str, Any]:
    """Append this session to ``provenance.json``; returns it."""
    record = directory.read_provenance(run_dir)
    entry = session(run_dir, trainer, datamodule, cache_dir)
    record["sessions"] = [*record.get("sessions", []), entry]
    directory.write_provenance(run_dir, record)
    return entry


def finish(run_dir: Path, status: str) -> None:
    """The end time and outcome of this (the last) session."""
    record = directory.read_provenance(run_dir)
    if record.get("sessions"):
        record["sessions"][-1].update(ended=time.strftime("%Y-%m-%d %H:%M:%S"), status=status)
        directory.write_provenance(run_dir, record)


def note(run_dir: Path, **facts: Any) -> None:
    """Add ``facts`` to this (the last) session's record, e.g. ``loggers``: each logger's run (MLflow's run id)."""
    record = directory.read_provenance(run_dir)
    if record.get("sessions"):
        record["sessions"][-1].update(facts)
        directory.write_provenance(run_dir, record)


def latest(run_dir) -> dict[str, Any]:
    """The last session's record ({} for runs of labkit versions before provenance)."""
    sessions = directory.read_provenance(run_dir).get("sessions") or []
    return sessions[-1] if sessions else {}


def summary(entry: dict[str, Any]) -> dict[str, Any]:
    """The few provenance facts that tell runs apart, flat (``code.commit``, ``versions.torch``, ``data.<file>``...):
    what compare.py and the loggers show."""
    out: dict[str, Any] = {}
    c = entry.get("code") or {}
    if c.get("commit"):
        out["code.commit"] = c["commit"][:10] + ("+dirty" if c.get("dirty") else "")
    out["code.labkit"] = c.get("labkit")
    for k, v in (entry.get("versions") or {}).items():
        out[f"versions.{k}"] = v
    m = entry.get("machine") or {}
    for k in ("host", "cpu", "torch_threads", "accelerator", "devices", "precision", "deterministic"):
        if k in m:
            out[f"machine.{k}"] = m[k]
    for d in entry.get("data") or []:
        out[f"data.{Path(d['path']).name}"] = d["sha256"][:12]
    return {k: v for k, v in out.items() if v is not None}


COLUMN = "provenance:"  # the column prefix of a provenance fact in compare.py and sweep summaries


def differing(run_dirs) -> tuple[list[dict[str, Any]], list[str]]:
    """(each run's :func:`summary`, the ``provenance:<fact>`` columns whose value differs between the runs that record
    provenance; runs of labkit versions before it record none and are left out of the comparison)."""
    summaries = [summary(latest(r)) for r in run_dirs]
    known = [s for s in summaries if s]
    keys = sorted({k for s in known for k in s})
    return summaries, [COLUMN + k for k in keys if len({repr(s.get(k)) for s in known}) > 1]


def data_warning(columns: list[str]) -> str | None:
    """The warning line for runs that read different data (None when they read the same)."""
    data = [c[len(COLUMN):] for c in columns if c.startswith(COLUMN + "data.")]
    return ("warning: these runs read different data (" + ", ".join(data) + "): their figures are not comparable as "
            "they stand") if data else None
