"""Start-up checks of a composed config: unknown keys (with a 'did you mean'), types and impossible values.

Every check runs before any data is read, and every message names the key path and what is allowed. What a
``_target_`` accepts and checks comes from :mod:`labkit.run.signatures`: for the targets conf/ names, without
importing them (no torch, no Lightning), so a wrong value is refused in a fraction of a second.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from labkit.core import checks
from labkit.core.errors import ConfigError
from labkit.run import signatures
from labkit.schemas.trainer import devices_wanted

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def accepted_params(target: str) -> set[str] | None:
    """Keyword arguments ``target`` accepts, following ``**kwargs`` up the class hierarchy; None = anything."""
    params = signatures.of(target).params
    return None if params is None else set(params)


def check_keys(node: Any, path: str, extra: set[str] = frozenset()) -> None:
    """Every key of a ``_target_`` node must be an argument of its target (recursively for nested nodes)."""
    if not isinstance(node, DictConfig):
        return
    target = node.get("_target_")
    if target:
        allowed = accepted_params(target)
        if allowed is not None:
            allowed |= HYDRA_KEYS | set(extra)
            for key in node.keys():
                if key not in allowed:
                    raise checks.unknown_key(path, str(key), allowed - HYDRA_KEYS,
                                             f"{target.rsplit('.', 1)[-1]} takes no argument '{key}'.")
    for key, child in _children(node):
        check_keys(child, f"{path}.{key}")


def _children(node: DictConfig):
    """``(key, child)`` for the children of ``node`` that are config nodes themselves, without resolving any
    interpolation (a ``${...}`` child, or a missing ``???`` one, is left out)."""
    for key in node.keys():
        if OmegaConf.is_missing(node, key) or OmegaConf.is_interpolation(node, key):
            continue
        child = node[key]
        if isinstance(child, DictConfig):
            yield key, child


def _missing_keys(node: DictConfig, path: str = "") -> list[str]:
    """Dotted keys whose value is ``???``, without resolving any interpolation (Hydra's node left out)."""
    out = []
    for key in node.keys():
        full = f"{path}.{key}" if path else str(key)
        if full != "hydra" and OmegaConf.is_missing(node, key):
            out.append(full)
    for key, child in _children(node):
        full = f"{path}.{key}" if path else str(key)
        if full != "hydra":
            out += _missing_keys(child, full)
    return out


def check_missing(cfg: DictConfig, usage: str = "", choices: dict | None = None, command: str = "this command") -> None:
    """Refuse mandatory values (``???`` in the YAML) that were not given, naming the key and the config that asks
    for it (``choices``: Hydra's group choices, e.g. ``{"data": "image_folder"}``)."""
    missing = _missing_keys(cfg)
    if not missing:
        return
    key = missing[0]
    group = key.split(".", 1)[0]
    option = (choices or {}).get(group)
    who = f"{group}={option} (conf/{group}/{option}.yaml)" if option and "." in key else command
    names = " and ".join(missing) + (" are" if len(missing) > 1 else " is")
    adds = " ".join(f"{k}=<value>" for k in missing)
    how = f" Usage: {usage}." if usage else ""
    raise ConfigError(f"{names} not set: {who} needs {'them' if len(missing) > 1 else 'it'}; add {adds} to the "
                      f"command line.{how}")


def _as_dict(node: Any) -> dict:
    """A config node as a plain dict with interpolations resolved and Hydra's own keys left out. A value whose
    interpolation can only be resolved inside the job (``${hydra:...}``, a run directory) stays as written: no rule
    reads such paths."""
    from omegaconf.errors import InterpolationResolutionError

    out = {}
    for key in node.keys():
        if key in HYDRA_KEYS:
            continue
        try:
            value = node[key]
        except InterpolationResolutionError as e:
            if "HydraConfig was not set" not in str(e):
                raise
            value = OmegaConf.to_container(node, resolve=False)[key]
        out[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return out


def check_machine(trainer: DictConfig) -> None:
    """What ``trainer.accelerator`` and ``trainer.devices`` ask for against what this machine has. Runs in the
    process that trains (a SLURM job checks its node, not the login node that submitted it), before the run directory
    is claimed, so a run that could not start leaves nothing behind."""
    import importlib.util
    import os
    import socket

    import torch

    accelerator, devices = trainer.get("accelerator"), trainer.get("devices")
    if not isinstance(accelerator, str):
        return
    host = socket.gethostname()
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    wanted = devices_wanted(devices)
    instead = "trainer.accelerator=auto (the GPU when there is one, else the CPU) or trainer=cpu"
    if accelerator == "cuda" or (accelerator == "gpu" and not mps):
        if cuda == 0:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            raise ConfigError(
                f"trainer.accelerator={accelerator}, but torch sees no CUDA GPU on {host} (torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda or 'none'}"
                + (f", CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "") + f"). Use {instead}; on a "
                "cluster, ask the scheduler for a GPU (SLURM through Hydra: hydra.launcher.gpus_per_node=1)")
        if wanted is not None and wanted > cuda:
            raise ConfigError(f"trainer.devices={devices} asks for {wanted} GPUs, but {host} has {cuda}: use "
                              f"trainer.devices={cuda} (or -1 for all of them), or trainer.num_nodes for more machines")
    elif accelerator in ("mps", "gpu") and not mps:
        raise ConfigError(f"trainer.accelerator={accelerator}, but {host} has no Apple GPU (MPS) that torch can use. "
                          f"Use {instead}")
    elif accelerator in ("tpu", "xla") and importlib.util.find_spec("torch_xla") is None:
        raise ConfigError(f"trainer.accelerator={accelerator} needs torch_xla, which is not installed on {host} "
                          f"(pip install torch_xla on a TPU machine). Use {instead}")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and cuda == 0 and not mps)
    processes = devices in (None, "auto") or (isinstance(devices, (int, str)) and not isinstance(devices, bool)
                                              and str(devices).strip().isdigit() and int(devices) > 0)
    if on_cpu and not processes:
        where = "trainer.accelerator=cpu" if accelerator == "cpu" else f"{host} has no GPU, so the run is on the CPU"
        raise ConfigError(f"trainer.devices={devices}: {where}, where devices is a number of processes (an integer "
                          "> 0, e.g. trainer.devices=2 with trainer=ddp); -1 and GPU indices need GPUs")



def check_monitors(cfg: DictConfig, task: signatures.Signature) -> None:
    """A callback's ``monitor`` (EarlyStopping, ModelCheckpoint, ...) must be a metric the task logs."""
    declared = tuple(task.logged_metrics or ())
    if not declared:
        return  # the task does not declare its metrics: nothing to check against
    # "epoch" and "step": Lightning's own monitor candidates (e.g. keep the newest checkpoints)
    accepted = set(declared) | {f"{m}{s}" for m in declared for s in ("_step", "_epoch")} | {"epoch", "step"}
    for key, node in (cfg.get("callbacks") or {}).items():
        if not isinstance(node, DictConfig) or node.get("monitor") is None:
            continue
        monitor = node.monitor
        if monitor not in accepted:
            raise checks.invalid(f"callbacks.{key}.monitor", monitor,
                                 f"one of the metrics {task.name} logs: {', '.join(declared)} "
                                 f"(or Lightning's epoch, step)",
                                 suggestion=checks.did_you_mean(str(monitor), (*declared, "epoch", "step")))


# metrics.json keys besides the task's logged metrics (see labkit.run.lifecycle.train)
RUN_METRICS = ("test/error", "params", "trainable_params", "epochs", "global_step", "wall_time_s")


def check_optimized_metric(cfg: DictConfig, task: signatures.Signature) -> None:
    """``optimized_metric`` (what a search returns) must be a key of the run's metrics.json."""
    metric = cfg.get("optimized_metric")
    declared = tuple(task.logged_metrics or ())
    if metric is None or not declared:
        return
    allowed = (*declared, *(f"best_{m}" for m in declared), *RUN_METRICS)
    if metric not in allowed and metric not in {f"{m}{s}" for m in declared for s in ("_step", "_epoch")}:
        raise checks.invalid("optimized_metric", metric, f"a key of the run's metrics.json: {', '.join(allowed)}",
                             suggestion=checks.did_you_mean(str(metric), allowed))


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` on the first problem found in a train config.

    Nothing is built, read or written, and for conf/'s own targets nothing heavy is imported: unknown keys, every
    value a constructor would refuse (each schema's rules, :mod:`labkit.schemas`, which the classes' ``check_args`` are), the
    trainer's counts and the callbacks' monitors."""
    check_missing(cfg)
    for group in ("model", "data", "task", "trainer"):
        if not isinstance(cfg.get(group), DictConfig) or "_target_" not in cfg[group]:
            raise ConfigError(f"config group '{group}' is missing or has no _target_: choose one, e.g. {group}=...")
    check_keys(cfg.data, "data")
    check_keys(cfg.model, "model", extra={"init_from"})
    check_keys(cfg.task, "task")
    check_keys(cfg.trainer, "trainer")
    for group in ("callbacks", "logger"):
        node = cfg.get(group)
        if isinstance(node, DictConfig):
            for key in node.keys():
                check_keys(node[key], f"{group}.{key}")
                target = node[key].get("_target_") if isinstance(node[key], DictConfig) else None
                if target:  # its schema's value rules (a logger's timeouts), as its constructor runs them
                    signatures.of(str(target)).check(_as_dict(node[key]), at=f"{group}.{key}")
    checks.non_negative_int("seed", cfg.get("seed"), optional=True, hint="seed=null draws a random one")
    signatures.of(cfg.data._target_).check(_as_dict(cfg.data))
    task = signatures.of(cfg.task._target_)
    task.check(_as_dict(cfg.task))
    signatures.of(cfg.trainer._target_).check(_as_dict(cfg.trainer))
    check_monitors(cfg, task)
    check_optimized_metric(cfg, task)


def check_required(cfg: DictConfig) -> None:
    """Keys a preset lists in ``requires`` (e.g. ``[init_from]``) must be given on the command line."""
    for key in cfg.get("requires") or []:
        if OmegaConf.select(cfg, key, default=None, throw_on_missing=False) in (None, "", "???"):
            raise ConfigError(f"{key} must be set for this preset: add {key}=... to the command line "
                              f"(the preset's comment says what it expects)")


def check_evaluate(cfg: DictConfig) -> None:
    """``evaluate.py``'s checks before anything is loaded: the run and checkpoint exist, split, report names and
    counts are valid, and the run's evaluation folder can be written."""
    from labkit.run import directory as runs

    checks.one_of("split", cfg.get("split"), ("train", "val", "test"))
    run_dir, ckpt = runs.resolve_run(cfg.run)
    runs.load_config(run_dir)
    if ckpt is None:
        ckpt = runs.find_checkpoint(run_dir, cfg.get("ckpt", "best"))
        if not ckpt.exists():
            raise FileNotFoundError(f"ckpt={cfg.ckpt}: {ckpt} does not exist; use best, last or a checkpoint file "
                                    f"in {ckpt.parent}")
    checks.writable_folder("run", Path(run_dir) / "evaluation")
    checks.positive_int("batch_size", cfg.get("batch_size"), optional=True)
    for key in ("knn_k", "shots", "draws"):
        checks.positive_int(key, cfg.get(key), optional=True)
    checks.non_negative_int("tsne_samples", cfg.get("tsne_samples"), optional=True)
    checks.non_negative_int("seed", cfg.get("seed"), optional=True)
    reports = cfg.get("reports")
    if reports is not None:
        from labkit.evaluation import BUILTIN, REPORTS

        known = set(REPORTS) | set(BUILTIN)  # without importing the report modules (torch)
        names = [reports] if isinstance(reports, str) else list(reports)
        for name in names:
            if name not in known:
                raise checks.invalid("reports", names, f"a list of report names: {', '.join(sorted(known))}",
                                     f"'{name}' is not one", checks.did_you_mean(str(name), known))
