"""Checks that keep a run's records whole, made before anything is written (called by :func:`labkit.run.plan.make`):

- what the machine, the installed packages and the data can give a run is checked before its directory exists
  (:func:`check_before_claim`): a refused start leaves no run folder and, on a resume, no ``resume_failed.json``;
- a folder that holds another run's record (a finished, failed or pruned run) is never trained into
  (:func:`check_target_folder`): its records would be overwritten by another experiment's;
- the config a run trained with is recorded (:func:`labkit.run.directory.keep_trained_config`: a copy beside
  ``config.yaml`` and its sha256 in ``metrics.json`` and ``provenance.json``), and a ``config.yaml`` edited since,
  in a key that changes what was trained, is refused by resume, reproduce and evaluate, naming the file and the keys
  (:func:`check_config_unedited`).
"""
from __future__ import annotations

import importlib.util
import io
import os
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from labkit.core.errors import ConfigError, LabkitError
from labkit.core.values import resolved
from labkit.run import directory

DIGEST_KEY = "config_sha256"

# the optional package each logger class needs (Lightning's own loggers included), by class name
LOGGER_PACKAGES = {"MLFlowLogger": "mlflow", "WandbLogger": "wandb", "CometLogger": "comet_ml",
                   "NeptuneLogger": "neptune"}


# ----- what a resume may change -------------------------------------------------------------------------------------
# Keys a resume may change: how long and how the run is driven, never what is being trained.
RESUME_DRIVING = ("trainer", "data.num_workers", "data.eval_batch_size", "data.pin_memory", "data.persistent_workers",
                  "data.keep_on_device", "data.data_dir", "logger", "callbacks", "paths", "test", "expected",
                  "measured", "tune_lr", "optimized_metric")
# ... except these, which change the optimization itself or which checkpoint counts as the best
RESUME_FIXED = ("trainer.accumulate_grad_batches", "trainer.gradient_clip_val", "trainer.gradient_clip_algorithm",
                "callbacks.model_checkpoint.monitor", "callbacks.model_checkpoint.mode")


def covers(prefixes, key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def resume_key_allowed(key: str) -> bool:
    return covers(RESUME_DRIVING, key) and not covers(RESUME_FIXED, key)


class MissingPackageError(LabkitError, ImportError):
    """An optional package a setting needs is not installed."""


# ----- before the claim ---------------------------------------------------------------------------------------------
def check_before_claim(cfg: DictConfig) -> None:
    """What the run asks of this machine (:func:`labkit.run.validate.check_machine`), the packages its loggers need,
    its dataset's files and its remote tracking server: refused here, before its directory is created (or, on a
    resume, written)."""
    from labkit.run.validate import check_machine

    check_machine(cfg.trainer)
    check_logger_packages(cfg)
    check_data_files(cfg)
    check_tracking_servers(cfg)


def check_tracking_servers(cfg: DictConfig) -> None:
    """An MLflow logger's remote ``tracking_uri`` (http/https), and an online W&B logger's server (its
    ``settings.base_url``, ``WANDB_BASE_URL`` or the host ``wandb login --host`` saved), answer within the logger's
    ``connect_timeout_s`` (null: not asked): an unreachable server is refused here, in one paragraph naming it,
    before the run's folder exists. A bad timeout value is left to the logger's own refusal. (The pre-flight imports
    no logger class, so a node is recognised by its ``_target_``'s class name.)"""
    from labkit.core.servers import CONNECT_TIMEOUT_S, remote, server_error

    for node in (cfg.get("logger") or {}).values():
        kind = str(node.get("_target_", "")).rsplit(".", 1)[-1] if isinstance(node, DictConfig) else ""
        if kind not in ("MLFlowLogger", "WandbLogger"):
            continue
        try:
            timeout = node.get("connect_timeout_s", CONNECT_TIMEOUT_S)
            where = node.get("tracking_uri") if kind == "MLFlowLogger" else _wandb_server(node)
        except Exception:  # an interpolation the pre-flight cannot resolve: the logger checks when it is built
            continue
        if not remote(where) or isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            continue
        error = server_error("mlflow" if kind == "MLFlowLogger" else "wandb", str(where), float(timeout))
        if error is not None:
            raise error


def _wandb_server(node: DictConfig) -> str | None:
    """The server an online W&B logger would talk to, read as W&B reads it (None: offline, nothing to ask)."""
    from labkit.adapters.wandb import saved_base_url

    mode = str(os.environ.get("WANDB_MODE") or "online").lower()
    if node.get("offline", True) is not False or mode in ("offline", "disabled", "dryrun"):
        return None
    settings = node.get("settings")
    url = settings.get("base_url") if isinstance(settings, DictConfig) else None
    return str(url) if url else saved_base_url()


def check_logger_packages(cfg: DictConfig) -> None:
    """Each logger's optional package (``logger=mlflow``: mlflow), looked up without importing it."""
    for key, node in (cfg.get("logger") or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        package = LOGGER_PACKAGES.get(str(node._target_).rsplit(".", 1)[-1])
        if package is None:
            continue
        try:
            found = importlib.util.find_spec(package) is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules, a broken install
            found = False
        if not found:
            raise MissingPackageError(
                f"logger={key} needs the '{package}' package, which is not installed: pip install {package} (or pip "
                f"install 'labkit[{package}]'), or choose another logger, e.g. logger=tensorboard. Nothing was "
                "written")


def check_data_files(cfg: DictConfig) -> None:
    """The data module's own checks that its files are there and its hold-outs fit them
    (:meth:`labkit.data.LabDataModule.check_available`, ``check_sizes``), on a module built from the config (building
    reads no data)."""
    from hydra.utils import instantiate

    node = cfg.get("data")
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return
    try:
        data = instantiate(node)
    except Exception:  # a constructor's refusal is the build step's to report, with its own message
        return
    data.check_available()
    data.check_sizes()  # data.val_size against the training set's size, where a file's header says it


# ----- a folder that holds a run's record ---------------------------------------------------------------------------
def recorded_status(run_dir: Path) -> str | None:
    """The status a run folder's metrics.json records when it is a record to keep (``ok``, ``failed``, ``pruned``...);
    None for a folder without one, or whose record is unfinished (preempted, interrupted) or a refusal (nothing ran)."""
    if not directory.is_run_dir(run_dir):
        return None
    metrics = directory.read_metrics(run_dir)
    if not metrics or metrics.get("refused"):
        return None
    status = metrics.get("status")
    return None if status in directory.UNFINISHED else str(status)


def _experiment_keys(a, b) -> list[str]:
    """The dotted keys whose values differ between two configs, where a resume may not change them (what is
    trained: model, data, task, optimizer, seed...)."""
    return [k for k in differing_keys(a, b) if not resume_key_allowed(k) and not k.startswith(
        ("overrides", "resume", "resume_history", "reproduce", "hydra", "expected", "measured",
                                          "requires"))]


def _resolved(cfg: DictConfig) -> dict:
    """``cfg`` with its interpolations resolved (:func:`labkit.core.values.resolved`), key by key: a key that cannot
    be resolved yet, such as ``paths.output_dir`` before Hydra has chosen the folder, is left out."""
    out = {}
    for key in cfg.keys():
        try:
            out[str(key)] = resolved(cfg[key])
        except Exception:  # an interpolation that resolves only in its own job: left out of the comparison
            continue
    return out


def refuse_reuse(run_dir: Path, cfg: DictConfig | None) -> None:
    """Refuse to train into ``run_dir`` when it holds a run's record (:func:`recorded_status`), naming what differs
    from this command's experiment and the three ways on."""
    status = recorded_status(run_dir)
    if status is None:
        return
    try:
        differ = _experiment_keys(_resolved(directory.load_config(run_dir)), _resolved(cfg)) if cfg is not None else []
    except Exception:  # an unreadable saved config: the refusal then names no keys
        differ = []
    what = (f"another experiment's (this command differs in {', '.join(differ[:6])}"
            f"{', ...' if len(differ) > 6 else ''})" if differ else "this same experiment's")
    raise ConfigError(
        f"{run_dir} holds a run whose metrics.json says status {status}: it is {what} record, and training here would "
        f"overwrite its config.yaml, metrics.json, history and checkpoints, so nothing was written. To continue that "
        f"run, python train.py resume={run_dir} (with a larger trainer.max_epochs); to re-run it and check its "
        f"figures, python train.py reproduce={run_dir}; for a new run, leave hydra.run.dir out (a new folder under "
        f"paths.log_dir/runs) or give a folder that holds no run")


def target_folder(cfg: DictConfig, raw_overrides: Sequence[str]) -> Path | None:
    """The folder this run will write: ``hydra.run.dir=`` of the command line, else ``paths.output_dir`` when it can
    be resolved already (the notebook API's, a Hydra job's); None when it is not known yet (a fresh name)."""
    value = directory.run_dir_override(raw_overrides)
    try:
        if value is not None:
            probe = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
            with open_dict(probe):
                probe["_labkit_target"] = value
            value = OmegaConf.select(probe, "_labkit_target", throw_on_resolution_failure=True)
        else:
            value = OmegaConf.select(cfg, "paths.output_dir", default=None, throw_on_resolution_failure=True)
    except Exception:  # ${hydra:...} outside a Hydra job, or a resolver this process lacks
        return None
    return Path(str(value)).expanduser() if value not in (None, "") else None


def check_target_folder(cfg: DictConfig, raw_overrides: Sequence[str]) -> None:
    """A new run (not a resume) never trains into a folder that holds a run's record."""
    target = target_folder(cfg, raw_overrides)
    if target is not None:
        refuse_reuse(target, cfg)


# ----- the config a run trained with --------------------------------------------------------------------------------
def recorded_digests(run_dir: Path) -> set[str]:
    """Every sha256 of config.yaml the run recorded: metrics.json's and each provenance session's (a resume killed
    after writing its config.yaml recorded its own digest there, not yet in metrics.json)."""
    found = {str(d) for d in [directory.read_metrics(run_dir).get(DIGEST_KEY)] if d}
    try:
        sessions = directory.read_provenance(run_dir).get("sessions") or []
    except AttributeError:
        sessions = []
    found |= {str(s[DIGEST_KEY]) for s in sessions if isinstance(s, dict) and s.get(DIGEST_KEY)}
    return found


def differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs (plain dicts or DictConfigs, interpolations unresolved)."""
    if isinstance(a, DictConfig):
        a = OmegaConf.to_container(a, resolve=False)
    if isinstance(b, DictConfig):
        b = OmegaConf.to_container(b, resolve=False)
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            out += differing_keys(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if a == b else [prefix or "(the whole config)"]


def check_config_unedited(run_dir: Path, command: str) -> None:
    """Refuse ``command`` (resume=, reproduce=, evaluate.py) on a run whose config.yaml was edited, since it
    trained, in a key that changes what was trained (an edit of how it runs, such as its loggers, is accepted); runs
    that recorded no digest (labkit before 0.x) are read as they are."""
    run_dir = Path(run_dir)
    recorded = recorded_digests(run_dir)
    path, copy = f"{run_dir}/{directory.CONFIG_FILE}", directory.trained_config_file(run_dir)
    now = directory.config_digest(run_dir)
    if not recorded or now is None:
        return
    if copy is not None:  # written by labkit only, beside each config.yaml a session trains with
        recorded.add(directory.config_digest(run_dir, trained=True))
    if now in recorded:
        return
    if copy is not None:
        try:
            keys = _experiment_keys(OmegaConf.load(copy), OmegaConf.load(io.StringIO(directory.read_config_text(run_dir))))
        except Exception:  # damaged YAML or an interpolation: named as unreadable below
            keys = ["(config.yaml cannot be read)"]
        if not keys:
            return  # only how the run is driven differs (its loggers, workers, a resume's history)
        shown = f"in {', '.join(keys[:8])}{', ...' if len(keys) > 8 else ''} (the trained values are in {copy.name})"
    else:
        shown = "(the config it trained with was not kept, so the keys cannot be named)"
    put_back = f"cp {copy} {path}" if copy is not None else "as it was"
    raise ConfigError(
        f"{command}: {path} was edited after the run trained with it: its sha256 differs from the one the run recorded, "
        f"{shown}. The run's checkpoints and figures belong to the config it trained with, so nothing was read or "
        f"written. Put config.yaml back ({put_back}), or train the edited settings as a new run: python train.py "
        f"init_from={run_dir} <key>=<value>")


# ----- a resumed run's tracking runs ---------------------------------------------------------------------------------
def recorded_logger_runs(run_dir: Path) -> dict[str, str]:
    """Each logger class's run id that the run's sessions recorded in provenance.json (the newest wins)."""
    found: dict[str, str] = {}
    for session in directory.read_provenance(run_dir).get("sessions") or []:
        if isinstance(session, dict):
            found.update(session.get("loggers") or {})
    return found


def _wandb_offline_id(save_dir) -> str | None:
    """The id of the newest W&B run saved under ``<save_dir>/wandb`` (``offline-run-<time>-<id>``)."""
    runs = sorted(Path(str(save_dir), "wandb").glob("*run-*-*"), key=lambda p: p.name.split("run-", 1)[-1])
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


def continued_logger_args(run_dir: Path, node: DictConfig) -> dict[str, Any]:
    """The constructor arguments that make a resumed run's logger continue the tracking run it logged into before:
    MLflow's ``run_id``, W&B's ``id`` (with ``resume="allow"``); {} for other loggers or when none was recorded."""
    name = str(node._target_).rsplit(".", 1)[-1]
    recorded = recorded_logger_runs(run_dir)
    if name == "MLFlowLogger" and recorded.get(name) and not node.get("run_id"):
        return {"run_id": recorded[name]}
    if name == "WandbLogger" and not node.get("id"):
        run_id = recorded.get(name) or _wandb_offline_id(node.get("save_dir") or run_dir)
        if run_id:
            return {"id": run_id, "resume": "allow"}
    return {}


def logger_runs(loggers) -> dict[str, str]:
    """Each logger's run id (MLflow's, W&B's: ``version``), by class name; a logger that cannot say is left out."""
    out = {}
    for lg in loggers:
        if type(lg).__name__ not in ("MLFlowLogger", "WandbLogger"):
            continue
        try:
            version = lg.version
        except Exception:  # a tracking server that went away
            continue
        if isinstance(version, (str, int)) and not isinstance(version, bool) and str(version):
            out[type(lg).__name__] = str(version)
    return out
