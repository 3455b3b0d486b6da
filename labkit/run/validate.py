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
    for key in node.keys():
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            check_keys(child, f"{path}.{key}")


def _missing_keys(node: DictConfig, path: str = "") -> list[str]:
    """Dotted keys whose value is ``???``, without resolving any interpolation (Hydra's node left out)."""
    out = []
    for key in node.keys():
        child = node._get_node(key)
        full = f"{path}.{key}" if path else str(key)
        if full == "hydra" or child is None:
            continue
        if child._is_missing():
            out.append(full)
        elif isinstance(child, DictConfig) and not child._is_interpolation():
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


def _plain(node: Any) -> dict:
    """A config node as a plain dict with interpolations resolved and Hydra's own keys left out."""
    return {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k not in HYDRA_KEYS}


def _check_trainer(trainer: DictConfig) -> None:
    get = trainer.get
    checks.integer("trainer.max_epochs", get("max_epochs"), -1, optional=True, hint="-1 = no limit")
    checks.non_negative_int("trainer.min_epochs", get("min_epochs"), optional=True)
    checks.integer("trainer.max_steps", get("max_steps"), -1, optional=True, hint="-1 = no limit")
    for key in ("log_every_n_steps", "accumulate_grad_batches", "check_val_every_n_epoch"):
        checks.positive_int(f"trainer.{key}", get(key), optional=True)
    checks.non_negative("trainer.gradient_clip_val", get("gradient_clip_val"), optional=True)
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        checks.count_or_fraction(f"trainer.{key}", get(key), whole=True, optional=True)
    checks.positive_int("trainer.num_nodes", get("num_nodes"), optional=True)
    if isinstance(get("accelerator"), str):  # (an Accelerator object given by _target_ is Lightning's to check)
        checks.one_of("trainer.accelerator", get("accelerator"), ACCELERATORS,
                      hint="auto: the GPU when there is one, else the CPU")
    if _devices_wanted(get("devices")) == 0:
        raise checks.invalid("trainer.devices", get("devices"), "auto, a number of devices (GPUs, or CPU processes) "
                             "> 0, -1 (every GPU of the node), or GPU indices such as [0,1] or '0,1'")


# Lightning's accelerator names (Trainer(accelerator=...)); gpu = cuda or mps, tpu = xla
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "xla")


def _devices_wanted(devices: Any) -> int | None:
    """How many devices ``trainer.devices`` asks for: None for auto/null/-1 (what there is), 0 for a value Lightning
    cannot read (0, an empty list, a word other than auto, a negative count other than -1)."""
    if devices is None or devices == "auto" or devices == -1 or devices == "-1":
        return None
    if isinstance(devices, bool):
        return 0
    if isinstance(devices, int):
        return devices if devices > 0 else 0
    if isinstance(devices, str):
        parts = [p.strip() for p in devices.split(",") if p.strip()]
        if len(parts) == 1 and parts[0].isdigit():  # "2": a count, as Lightning reads it
            return int(parts[0])
        return len(parts) if parts and all(p.isdigit() for p in parts) else 0
    if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)):
        items = list(devices)
        return len(items) if items and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                           for i in items) else 0
    return 0


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
    wanted = _devices_wanted(devices)
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
    value a constructor would refuse (each class's ``check_args``, the functions of :mod:`labkit.core.rules`), the
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
    checks.non_negative_int("seed", cfg.get("seed"), optional=True, hint="seed=null draws a random one")
    signatures.of(cfg.data._target_).check(_plain(cfg.data))
    task = signatures.of(cfg.task._target_)
    task.check(_plain(cfg.task))
    _check_trainer(cfg.trainer)
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
        from labkit.evaluation import REPORTS

        known = set(REPORTS) | builtin_report_names()  # without importing the report modules (torch)
        names = [reports] if isinstance(reports, str) else list(reports)
        for name in names:
            if name not in known:
                raise checks.invalid("reports", names, f"a list of report names: {', '.join(sorted(known))}",
                                     f"'{name}' is not one", checks.did_you_mean(str(name), known))


def builtin_report_names() -> set[str]:
    """The names labkit's report modules register (``@register("<name>", ...)`` in labkit/evaluation/*.py), read from
    their source: what ``labkit.evaluation._load_builtin()`` would register, without importing torch."""
    import ast

    import labkit.evaluation as pkg

    names = set()
    for folder in pkg.__path__:
        for path in sorted(Path(folder).glob("*.py")):
            if path.name.startswith("_"):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "register" \
                        and node.args and isinstance(node.args[0], ast.Constant):
                    names.add(node.args[0].value)
    return names
