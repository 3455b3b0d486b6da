"""Which process this is in a distributed run: global rank, local rank, node rank and world size, read from the
launcher's environment the way Lightning's cluster environments read it, before anything is claimed or written.

One function, :func:`ranks`, pure logic over an environment mapping (``os.environ`` by default), so each launcher's
variables are unit-tested with a plain dict. The launchers, in Lightning's order of detection
(``AcceleratorConnector._choose_and_init_cluster_environment``):

=============  ==============================================================  ====================================
launcher       detected by                                                     ranks
=============  ==============================================================  ====================================
torchelastic   ``TORCHELASTIC_RUN_ID`` (torchrun; what                         ``RANK``, ``LOCAL_RANK``,
               ``torch.distributed.is_torchelastic_launched`` checks)          ``GROUP_RANK``, ``WORLD_SIZE``
slurm          ``SLURM_NTASKS`` and a job name other than ``bash`` /           ``SLURM_PROCID``, ``SLURM_LOCALID``,
               ``interactive`` (Lightning's ``_is_srun_used``)                 ``SLURM_NODEID``, ``SLURM_NTASKS``
lsf            ``LSB_JOBID``, ``LSB_DJOB_RANKFILE``,                           ``JSM_NAMESPACE_RANK``,
               ``JSM_NAMESPACE_LOCAL_RANK``, ``JSM_NAMESPACE_SIZE`` (jsrun)    ``JSM_NAMESPACE_LOCAL_RANK``,
                                                                               ``JSM_NAMESPACE_SIZE``; node: the
                                                                               host's place in the rank file
mpi            a world size above 1 in ``OMPI_COMM_WORLD_SIZE`` (Open MPI),    ``OMPI_COMM_WORLD_RANK`` /
               ``PMI_SIZE`` (MPICH, Intel MPI) or ``PMIX_SIZE``                ``PMI_RANK`` / ``PMIX_RANK``, local:
                                                                               ``OMPI_COMM_WORLD_LOCAL_RANK`` /
                                                                               ``MPI_LOCALRANKID``
kubeflow       ``RANK`` and ``WORLD_SIZE`` without ``NODE_RANK``,              one process per pod: node rank =
               ``GROUP_RANK`` or ``LOCAL_RANK`` (a PyTorchJob's pods;          global rank = ``RANK``, local 0
               Lightning's ``KubeflowEnvironment``)                            (``KubeflowEnvironment``)
lightning      anything else: plain ``NODE_RANK`` (or ``GROUP_RANK``) +        node ``NODE_RANK``, local
               ``WORLD_SIZE`` (+ ``LOCAL_RANK``), Lightning's own recipe and   ``LOCAL_RANK`` (0), global
               the processes its launcher starts; nothing set: one process     node * devices per node + local
=============  ==============================================================  ====================================

MPI is read from the MPI runtime's own variables (Lightning asks ``mpi4py``, which may not be installed: reading the
variables keeps exactly one process claiming the run either way). Global rank 0 is exact for every launcher; the
plain recipe's other global ranks need the devices per node (``devices_per_node``, the trainer's ``devices``).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in its run's process group."""

    global_rank: int = 0
    local_rank: int = 0
    node_rank: int = 0
    world_size: int = 1
    launcher: str = "lightning"  # which environment the ranks came from (the table above)

    @property
    def is_zero(self) -> bool:
        """Global rank 0: the one process that claims, writes and logs the run."""
        return self.global_rank == 0

    def describe(self) -> str:
        return (f"global rank {self.global_rank} of {self.world_size} (node {self.node_rank}, local rank "
                f"{self.local_rank}, from the {self.launcher} launcher's variables)")


def _int(env: Mapping[str, str], *keys: str, default: int | None = None) -> int | None:
    """The first of ``keys`` set to an integer in ``env``; ``default`` when none is."""
    for key in keys:
        value = env.get(key)
        if value is None or str(value).strip() == "":
            continue
        try:
            return int(str(value).strip())
        except ValueError:
            continue
    return default


def _lsf_node_rank(env: Mapping[str, str], hostname: str | None) -> int | None:
    """The host's place among the distinct hosts of ``LSB_DJOB_RANKFILE`` (its first line, the launch node, left out),
    as Lightning's ``LSFEnvironment`` computes it; None when the file cannot be read or does not list the host."""
    try:
        with open(env["LSB_DJOB_RANKFILE"]) as f:
            hosts = [line.strip() for line in f][1:]
    except (KeyError, OSError):
        return None
    order: dict[str, int] = {}
    for host in hosts:
        order.setdefault(host, len(order))
    return order.get(hostname or socket.gethostname())


def ranks(env: Mapping[str, str] | None = None, devices_per_node: int | None = None,
          num_nodes: int | None = None, hostname: str | None = None) -> Ranks:
    """This process's ranks from the launcher's environment (``os.environ`` unless given): see the module's table.

    ``devices_per_node`` (the trainer's ``devices`` as a count) and ``num_nodes`` only matter for the plain recipe,
    where Lightning computes the global rank as node rank * processes per node + local rank (``LOCAL_WORLD_SIZE``, or
    ``WORLD_SIZE / num_nodes``, stand in when it is not given)."""
    env = os.environ if env is None else env
    if env.get("TORCHELASTIC_RUN_ID") is not None:
        rank = _int(env, "RANK", default=0)
        return Ranks(rank, _int(env, "LOCAL_RANK", default=0), _int(env, "GROUP_RANK", default=0),
                     _int(env, "WORLD_SIZE", default=1), "torchelastic")
    if "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return Ranks(_int(env, "SLURM_PROCID", default=0), _int(env, "SLURM_LOCALID", default=0),
                     _int(env, "SLURM_NODEID", default=0), _int(env, "SLURM_NTASKS", default=1), "slurm")
    if {"LSB_JOBID", "LSB_DJOB_RANKFILE", "JSM_NAMESPACE_LOCAL_RANK", "JSM_NAMESPACE_SIZE"} <= set(env):
        rank, local = _int(env, "JSM_NAMESPACE_RANK", default=0), _int(env, "JSM_NAMESPACE_LOCAL_RANK", default=0)
        node = _lsf_node_rank(env, hostname)
        return Ranks(rank, local, node if node is not None else 0, _int(env, "JSM_NAMESPACE_SIZE", default=1), "lsf")
    mpi_size = _int(env, "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", default=1)
    if mpi_size > 1:
        rank = _int(env, "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", default=0)
        local = _int(env, "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PALS_LOCAL_RANKID", default=0)
        per_node = _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", default=None)
        node = _int(env, "OMPI_COMM_WORLD_NODE_RANK", default=None)
        if node is None:
            node = (rank - local) // per_node if per_node else 0
        return Ranks(rank, local, node, mpi_size, "mpi")
    world = _int(env, "WORLD_SIZE", default=None)
    node = _int(env, "NODE_RANK", "GROUP_RANK", default=None)
    local = _int(env, "LOCAL_RANK", default=None)
    rank = _int(env, "RANK", default=None)
    if rank is not None and world is not None and node is None and local is None:
        return Ranks(rank, 0, rank, world, "kubeflow")
    node, local = node or 0, local or 0
    per_node = devices_per_node or _int(env, "LOCAL_WORLD_SIZE", default=None)
    if not per_node and world and num_nodes:
        per_node = max(1, world // num_nodes)
    per_node = per_node or 1
    return Ranks(node * per_node + local, local, node, world or per_node * (num_nodes or 1), "lightning")


def devices_count(devices) -> int | None:
    """The trainer's ``devices`` as a number of processes per node (an int, ``"2"``, a list or ``"0,1"`` of device
    ids); None for ``auto``/``-1`` and other values only the machine can answer."""
    if isinstance(devices, bool) or devices is None:
        return None
    if isinstance(devices, int):
        return devices if devices > 0 else None
    if isinstance(devices, (list, tuple)):
        return len(devices) or None
    text = str(devices).strip()
    if text.lstrip("-").isdigit():
        n = int(text)
        return n if n > 0 else None
    parts = [p for p in text.split(",") if p.strip()]
    return len(parts) if parts and all(p.strip().isdigit() for p in parts) and "," in text else None


def current(trainer_cfg=None, env: Mapping[str, str] | None = None) -> Ranks:
    """:func:`ranks` of this process, with the devices per node and node count of a trainer config when given."""
    per_node = num_nodes = None
    if trainer_cfg is not None:
        try:
            per_node = devices_count(trainer_cfg.get("devices"))
            num_nodes = _int({"n": str(trainer_cfg.get("num_nodes"))}, "n")
        except Exception:  # an interpolation or value only the trainer resolves: the launcher's variables decide
            pass
    return ranks(env, devices_per_node=per_node, num_nodes=num_nodes)
