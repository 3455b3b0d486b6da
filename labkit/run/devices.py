"""One device set per parallel sweep job: with ``hydra/launcher=joblib hydra.launcher.n_jobs=K`` (and the Optuna
sweeper's batches of parallel trials) on a machine with N GPUs, each running job trains on its own disjoint set of
``devices_per_job`` GPUs (default ``N // K``), never a GPU another running job holds.

- :func:`allocate` is the pure logic: N devices, K jobs at a time -> K disjoint device sets, or a
  :class:`~labkit.core.errors.ConfigError` when there are too few devices.
- :class:`DeviceSets` (a Hydra callback, ``conf/hydra/default.yaml``) checks the sweep before any job starts: too
  many parallel jobs for the GPUs is refused there, in one paragraph.
- :func:`lease` runs at the start of each sweep job (``labkit.cli.train.main``): it takes a free slot (an exclusive
  ``flock`` on ``<sweep dir>/.labkit-devices/slot-<i>.lock``, released when the job ends, or by the kernel when its
  process dies) and sets ``trainer.devices`` to the slot's GPU indices. A slot, not the job number: joblib starts job
  ``K + 1`` when *any* of the first K ends, so ``job number % K`` could name a set still in use.

``trainer.devices`` is set to the indices (``[2, 3]``), not ``CUDA_VISIBLE_DEVICES``: joblib's worker processes run
one job after another, and CUDA reads that variable once per process. Nothing is changed on the CPU
(``trainer.accelerator=cpu``, or ``auto`` on a machine without GPUs), by launchers that run one job at a time (the
basic launcher) or that give each job its own machine (submitit).
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf, open_dict

from labkit.core.errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows: no flock; jobs are not given device sets there)
    fcntl = None

log = logging.getLogger("labkit")

LEASE_DIR = ".labkit-devices"
GPU_ACCELERATORS = ("gpu", "cuda")


def allocate(n_devices: int, n_jobs: int, devices_per_job: int | None = None) -> list[tuple[int, ...]]:
    """``n_jobs`` disjoint sets of device indices out of ``range(n_devices)``: ``devices_per_job`` each (default
    ``n_devices // n_jobs``, so that no device is shared; the ``n_devices % n_jobs`` left over stay idle). Too many
    jobs for the devices is a :class:`ConfigError` naming what fits."""
    if n_jobs < 1:
        raise ConfigError(f"{n_jobs} parallel jobs: at least one job runs at a time")
    if devices_per_job is not None and (isinstance(devices_per_job, bool) or int(devices_per_job) < 1):
        raise ConfigError(f"devices_per_job={devices_per_job} is not a positive number of devices: give a count such "
                          f"as devices_per_job=1, or null for the devices divided among the jobs")
    per = int(devices_per_job) if devices_per_job is not None else n_devices // n_jobs
    if per < 1 or per * n_jobs > n_devices:
        fits = n_devices // (per or 1)
        raise ConfigError(
            f"{n_jobs} jobs at a time with {per or 1} GPU(s) each need {(per or 1) * n_jobs} GPUs, and this machine has "
            f"{n_devices}: no GPU is given to two running jobs, so nothing was started. Run at most {fits} jobs at a "
            f"time (hydra.launcher.n_jobs={fits}, or hydra.sweeper.n_jobs for hparams_search=optuna)"
            + (f", or fewer GPUs per job (devices_per_job={n_devices // n_jobs})" if n_devices >= n_jobs else "")
            + ", or train on the CPU (trainer.accelerator=cpu)")
    return [tuple(range(i * per, (i + 1) * per)) for i in range(n_jobs)]


def _joblib_workers(n: Any) -> int:
    """joblib's ``n_jobs`` as a count: -1 every CPU, -2 all but one, ..."""
    n = int(n)
    if n < 0:
        n = (os.cpu_count() or 1) + 1 + n
    return max(1, n)


def parallel_jobs(hydra_cfg) -> int:
    """How many jobs of this sweep run at the same time on this machine: joblib's ``n_jobs`` (at most the Optuna
    sweeper's batch of ``hydra.sweeper.n_jobs`` trials when it sets one); 1 for any other launcher."""
    target = str(OmegaConf.select(hydra_cfg, "launcher._target_", default="") or "")
    if "JoblibLauncher" not in target:
        return 1
    k = _joblib_workers(OmegaConf.select(hydra_cfg, "launcher.n_jobs", default=1) or 1)
    batch = OmegaConf.select(hydra_cfg, "sweeper.n_jobs", default=None)
    if isinstance(batch, int) and not isinstance(batch, bool) and batch > 0:
        k = min(k, batch)
    return k


def device_count() -> int:
    """The GPUs this process may use (``CUDA_VISIBLE_DEVICES`` respected): torch's count."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def uses_gpus(trainer_cfg, n_devices: int) -> bool:
    """The job trains on GPUs: ``accelerator`` gpu/cuda, or auto on a machine that has some."""
    accelerator = str(OmegaConf.select(trainer_cfg, "accelerator", default="auto") or "auto").lower()
    return n_devices > 0 and (accelerator in GPU_ACCELERATORS or accelerator == "auto")


def device_sets(cfg: DictConfig, hydra_cfg, count: int | None = None) -> list[tuple[int, ...]] | None:
    """The sweep's device sets (None: nothing to divide: one job at a time, or no GPUs in use)."""
    k = parallel_jobs(hydra_cfg)
    if k < 2:
        return None
    n = device_count() if count is None else count
    if not uses_gpus(cfg.get("trainer"), n):
        return None
    return allocate(n, k, cfg.get("devices_per_job"))


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object


class DeviceSets(_HydraCallback):
    """Hydra callback (``hydra.callbacks.device_sets``): a sweep with more parallel jobs than its GPUs allow is
    refused before any job starts; the sets are logged."""

    def __init__(self, count: int | None = None) -> None:
        self.count = count  # the GPUs to divide, indices 0..count-1 (None: every GPU this machine shows torch)

    def check(self, config: DictConfig) -> list[tuple[int, ...]] | None:
        """The sweep's device sets, or the :class:`ConfigError` that refuses it."""
        return device_sets(config, config.hydra, self.count)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            sets = self.check(config)
        except ConfigError as e:  # Hydra turns a callback's exception into a warning and starts the jobs anyway
            import sys

            print(f"error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        if sets:
            log.info("%d jobs at a time, each on its own GPUs: %s", len(sets), "; ".join(
                ",".join(map(str, s)) for s in sets))


def _try_lock(path: Path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def lease(cfg: DictConfig, hydra_cfg, job_num: int, sweep_dir, count: int | None = None,
          timeout: float = 3600.0, poll: float = 1.0) -> Iterator[tuple[int, ...] | None]:
    """For the length of one sweep job: a free device set of the sweep (:func:`device_sets`), ``trainer.devices``
    of ``cfg`` set to its indices; yields them (None when the sweep divides no devices, ``cfg`` unchanged)."""
    if count is None:  # the callback's count when the command line gave one (hydra.callbacks.device_sets.count=4)
        count = OmegaConf.select(hydra_cfg, "callbacks.device_sets.count", default=None)
    sets = device_sets(cfg, hydra_cfg, count)
    if not sets or fcntl is None:
        yield None
        return
    folder = Path(sweep_dir) / LEASE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    k = len(sets)
    deadline = time.monotonic() + timeout
    fd = slot = None
    while fd is None:
        for i in range(k):
            slot = (job_num + i) % k  # the job number's own slot first: the usual case takes no other one
            fd = _try_lock(folder / f"slot-{slot}.lock")
            if fd is not None:
                break
        if fd is None:
            if time.monotonic() >= deadline:
                raise ConfigError(f"job {job_num} found all {k} device sets of {folder} held by other jobs for "
                                  f"{timeout:.0f} s: is another sweep sharing this sweep directory?")
            time.sleep(poll)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"job {job_num} pid {os.getpid()}\n".encode(), 0)
        ids = sets[slot]
        with open_dict(cfg):
            cfg.trainer.devices = list(ids)
        log.info("job %s trains on GPU(s) %s (device set %d of %d)", job_num, ",".join(map(str, ids)), slot + 1, k)
        yield ids
    finally:
        os.close(fd)  # releases the slot for the next job
