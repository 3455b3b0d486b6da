"""DDP inside a sweep: ``python train.py -m trainer=ddp trainer.devices=2 ... task.optimizer.lr=0.01,0.02`` with the
basic launcher (jobs one after another in one process) or ``hydra/launcher=joblib`` (jobs side by side in worker
processes).

Lightning's DDP on one machine starts the other ranks itself (``_SubprocessScriptLauncher``): it runs the script's
command line again, ``sys.argv`` plus ``hydra.run.dir=<hydra.run.dir>``, with ``MASTER_PORT``, ``WORLD_SIZE``,
``NODE_RANK`` and ``LOCAL_RANK`` set in its own environment. Inside a sweep job that goes wrong three ways: the
command line is the whole sweep (``-m ... lr=0.01,0.02``: each rank 1 starts a sweep of its own, and rank 0 waits
for it in the rendezvous for ever); ``hydra.run.dir`` is not the job's folder (a multirun job writes to
``hydra.runtime.output_dir``); and the variables stay in the process after the job, so the next job in that process
believes it was started by a launcher (``LOCAL_RANK`` set: it starts no rank 1 and waits) and reuses the old port;
and the job's process group stays initialized, so the next job would train in it, with the last job's ranks gone.

:func:`sweep_job` wraps each sweep job (``labkit.cli.train.main``): for the job's length the command line Lightning
copies is the job's own (``python train.py <the job's overrides>``; in a joblib worker, whose own command line is
``python -m loky...``, the script the sweep was started with: :data:`SCRIPT_ENV`) and ``hydra.run.dir`` is the job's
folder, so the other ranks run this one job in this job's folder (they use rank 0's directory: :mod:`labkit.run.ranks`);
the job gets its own free rendezvous port (``MASTER_PORT``, claimed under ``<sweep dir>/.labkit-ports/`` so that two
jobs of the sweep never take the same one); and afterwards the process group is ended and the environment,
``sys.argv`` and ``hydra.run.dir`` are as they were. A sweep started by a launcher (torchrun, SLURM, ...; its
variables set before the job) keeps its port.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Iterator, Mapping, MutableMapping, Sequence

from labkit.run import ranks

log = logging.getLogger("labkit")

#: what Lightning's launcher sets in its own process for the ranks it starts
DDP_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
PORT_DIR = ".labkit-ports"
#: the script the sweep was started with (``train.py``, made absolute), set by ``labkit.cli.app.run``: a job in a
#: joblib worker runs under the worker's own command line (``python -m loky...``), which Lightning would copy
SCRIPT_ENV = "LABKIT_SCRIPT"

_started_argv: list[str] | None = None  # the process's own command line while a sweep job's stands in for it


def command_line() -> list[str]:
    """This process's command line as it was started (``sys.argv``; during a DDP sweep job, whose ranks are given the
    job's own command line, the sweep's): what provenance records and a sweep's swept keys are read from."""
    return list(_started_argv if _started_argv is not None else sys.argv)


def launched_outside(env: Mapping[str, str]) -> bool:
    """The process was started by a launcher (torchrun, SLURM, LSF, MPI, the plain recipe's variables): its rendezvous
    is the launcher's, not this job's to choose."""
    if ranks.ranks(env).launcher != "lightning":
        return True
    return any(key in env for key in ("MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "GROUP_RANK", "RANK"))


def claim_port(sweep_dir, attempts: int = 100) -> int:
    """A TCP port free on this machine now that no other job of the sweep has taken: the kernel's pick (bind to port
    0), claimed by creating ``<sweep_dir>/.labkit-ports/<port>`` (exclusive create: two jobs never hold the same)."""
    folder = Path(sweep_dir) / PORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        try:
            os.close(os.open(folder / str(port), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            continue
        return port
    raise OSError(f"no free TCP port found for the job's DDP rendezvous after {attempts} tries ({folder})")


def distributed(trainer_cfg) -> bool:
    """The trainer starts several processes (a DDP strategy, several devices or nodes); unknown: no."""
    if trainer_cfg is None:
        return False
    strategy = str(trainer_cfg.get("strategy") or "")
    nodes = ranks.devices_count(trainer_cfg.get("num_nodes")) or 1
    return "ddp" in strategy or (ranks.devices_count(trainer_cfg.get("devices")) or 1) > 1 or nodes > 1


@contextlib.contextmanager
def sweep_job(hydra_cfg, overrides: Sequence[str], output_dir, sweep_dir, trainer_cfg=None,
              env: MutableMapping[str, str] | None = None) -> Iterator[int | None]:
    """For the length of one sweep job (``hydra_cfg``: its Hydra config; ``overrides``: its own task overrides;
    ``trainer_cfg``: its trainer): the DDP variables the last job left are gone, and when the trainer runs several
    processes Lightning's copy of the command line is this job's (:func:`command_line` keeps the process's own),
    ``hydra.run.dir`` is ``output_dir``, and, unless a launcher set the ranks, ``MASTER_PORT`` is a port of its own
    (:func:`claim_port`). Yields that port (None: none claimed). Everything is put back afterwards."""
    from omegaconf import OmegaConf, read_write

    global _started_argv
    env = os.environ if env is None else env
    saved_env = {key: env.get(key) for key in DDP_VARIABLES}
    saved_argv = list(sys.argv)
    main = sys.modules.get("__main__")
    saved_spec = getattr(main, "__spec__", None)
    saved_run_dir = OmegaConf.to_container(hydra_cfg.run, resolve=False).get("dir")
    port, several = None, distributed(trainer_cfg)
    try:
        if not launched_outside(env):
            for key in DDP_VARIABLES:
                env.pop(key, None)
            if several:
                port = claim_port(sweep_dir)
                env["MASTER_PORT"] = str(port)
                log.info("this job's DDP ranks meet at 127.0.0.1:%d (MASTER_PORT, its own in the sweep)", port)
        if several:
            # Lightning runs `python <sys.argv[0]> <sys.argv[1:]>` when __main__ has no module spec, else `python -m
            # <spec> ...`: the script and this job's overrides, whichever process the launcher ran the job in
            _started_argv = saved_argv
            sys.argv = [os.environ.get(SCRIPT_ENV) or saved_argv[0], *overrides]
            if main is not None:
                main.__spec__ = None
            with read_write(hydra_cfg):
                hydra_cfg.run.dir = str(Path(output_dir).resolve())
        yield port
    finally:
        _leave_process_group()
        for key, value in saved_env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        sys.argv, _started_argv = saved_argv, None
        if main is not None:
            main.__spec__ = saved_spec
        with read_write(hydra_cfg):
            hydra_cfg.run.dir = saved_run_dir


def _leave_process_group() -> None:
    """End the job's process group: Lightning leaves it initialized after training, and the next job in this process
    would train in it (its peers, the last job's ranks, are gone: ``Connection closed by peer``)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
