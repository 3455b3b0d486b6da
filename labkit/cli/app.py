"""Command-line entry points: ``run(config_name, fn, check=...)`` is all a script (train.py, evaluate.py, predict.py,
export.py) needs.

Hydra composes the command line's config once. Before it creates anything (a run directory, ``.hydra/``,
``train.log``) the :class:`Preflight` callback (``hydra.callbacks.labkit_preflight`` in each script's config) names a
mandatory value that was not given and runs the script's own ``check(cfg[, overrides])`` on that config (train.py:
:func:`labkit.run.plan.make`, whose plan the job reads with :func:`checked`). A misspelt key gets a "did you mean"
with or without ``+``. Sweeps with several values per override (``-m a=1,2``) skip this: each job checks itself.

Errors a user can cause (labkit's own, missing or unreadable files, Hydra's composition errors, OmegaConf's
errors from bad overrides) print one paragraph, ``error: ...``, and exit with status 1, before or during the job.
``--debug`` (or ``HYDRA_FULL_ERROR=1``) shows the full traceback instead. ``--help <group>[/<option>]`` prints an
option's schema; ``help=True`` gives the script a ``--help`` of its own: its docstring and its YAML's options with
their comments.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

from hydra.experimental.callback import Callback

from labkit import _compat
from labkit.adapters import hydra as hydra_internals
from labkit.cli import mode
from labkit.core import checks, console, files
from labkit.core.errors import ConfigError, LabkitError
from labkit.run import directory as runs

DEBUG_FLAG = "--debug"
# Hydra flags that print something instead of running, or change which config is composed: no pre-flight
_NO_PREFLIGHT = {"--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i", "--shell-completion",
                 "-sc", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun",
                 "--package", "-p", "--resolve"}


# ----- which errors are the user's -------------------------------------------------------------------------------
def _user_error_types() -> tuple[type, ...]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return (LabkitError, FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError,
            HydraException, OmegaConfBaseException)


def is_user_error(e: BaseException) -> bool:
    """True for errors a user causes with their input (and that print one paragraph, no traceback); a full disk or
    quota counts (labkit's :class:`~labkit.core.errors.DiskFullError`, or an ``OSError`` ENOSPC/EDQUOT of a write
    that did not go through labkit's atomic writes)."""
    from hydra.errors import InstantiationException

    if isinstance(e, InstantiationException):  # a constructor failed: the user's fault only if the cause is
        cause = e.__cause__
        return cause is not None and is_user_error(cause)
    return isinstance(e, _user_error_types()) or files.is_disk_full(e)


def message(e: BaseException) -> str:
    """The error as one paragraph: lines joined, errno prefixes dropped, a full disk said as labkit says it (the
    folder, the space a checkpoint needs, the space left)."""
    if files.is_disk_full(e):
        e = files.disk_full(e)
    text = str(e) or type(e).__name__
    if isinstance(e, OSError) and e.filename and text.startswith("[Errno"):
        text = f"{e.filename}: {e.strerror}"
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def fail(e: BaseException) -> NoReturn:
    """Print ``error: <one paragraph>`` on stderr and exit with status 1."""
    from hydra.errors import InstantiationException

    while isinstance(e, InstantiationException) and e.__cause__ is not None:
        e = e.__cause__  # the constructor's own message, not Hydra's 'Error in call to target' wrapper
    sys.stderr.flush()
    print(f"error: {message(e)}", file=sys.stderr, flush=True)
    raise SystemExit(1)


class _NoTracebackOfAFullDisk(logging.Filter):
    """A record that carries a full disk's exception (``could not record the failure``) keeps its line, not the
    traceback: the run's one paragraph says what is full."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and files.is_disk_full(record.exc_info[1]):
            record.msg, record.args = f"{record.getMessage()}: the disk is full", ()
            record.exc_info = record.exc_text = None
        return True


@contextlib.contextmanager
def quiet_about_a_full_disk():
    """While a job runs, a full disk ends it with one paragraph and nothing else: a log handler that cannot write
    (train.log on that disk) stays silent instead of printing Python's ``--- Logging error ---`` and a traceback, and
    labkit's log records drop a full disk's traceback. Every other logging error is reported as before."""
    original = logging.Handler.handleError

    def handle_error(handler: logging.Handler, record: logging.LogRecord) -> None:
        if not files.is_disk_full(sys.exc_info()[1]):
            original(handler, record)

    quiet = _NoTracebackOfAFullDisk()
    logging.Handler.handleError = handle_error
    logging.getLogger("labkit").addFilter(quiet)
    try:
        yield
    finally:
        logging.Handler.handleError = original
        logging.getLogger("labkit").removeFilter(quiet)


def _report_as_hydra_does(e: Exception) -> NoReturn:
    """Hydra's own report of an error that is not labkit's to explain (its shortened traceback), exit status 1."""
    os.environ.pop("HYDRA_FULL_ERROR", None)
    tb = e.__traceback__  # from Hydra's run_job on, as Hydra shortens it when it catches the error itself
    while tb is not None and tb.tb_frame.f_code.co_name != "run_job":
        tb = tb.tb_next
    if tb is not None:
        e = e.with_traceback(tb)

    def again():
        raise e

    hydra_internals.run_and_report(again)


# set beside HYDRA_FULL_ERROR=1 while labkit (not the user) has set it, so that the processes a run starts (DDP ranks)
# do not take it for --debug
_LABKIT_SET = "LABKIT_SET_HYDRA_FULL_ERROR"


def _debug(argv: list[str]) -> bool:
    return DEBUG_FLAG in argv or (os.environ.get("HYDRA_FULL_ERROR") == "1" and os.environ.get(_LABKIT_SET) != "1")


# ----- --help from the script's own YAML ---------------------------------------------------------------------------
def _usage(yaml_text: str) -> str:
    """The YAML's first comment line, when it shows a command (``# python evaluate.py run=...``)."""
    first = yaml_text.lstrip().splitlines()[0] if yaml_text.strip() else ""
    m = re.search(r"(python \S+\.py.*)$", first)
    return m.group(1).strip() if m else ""


def help_text(conf_dir: Path, config_name: str, doc: str | None) -> str:
    """The script's docstring, then its options: ``conf/<config_name>.yaml`` with its comments, without the
    ``defaults`` list and the ``hydra`` block."""
    text = (Path(conf_dir) / f"{config_name}.yaml").read_text()
    kept, skip = [], False
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            skip = line.split(":", 1)[0].strip() in ("defaults", "hydra")
        if not skip:
            kept.append(line)
    while kept and (not kept[-1].strip() or kept[-1].startswith("#")) and skip:
        kept.pop()  # comments that introduced a dropped block at the end
    script = f"{config_name}.py"
    return (f"{(doc or '').strip()}\n\n"
            f"Options (key=value on the command line; defaults and comments from conf/{config_name}.yaml):\n\n"
            + "\n".join(kept).strip("\n") +
            f"\n\n{DEBUG_FLAG}  on an error, show the full traceback (same as HYDRA_FULL_ERROR=1)\n"
            f"--cfg job  print the composed config and exit\n\nExample: {_usage(text) or 'python ' + script}\n")


def _help_topic(args: Sequence[str]) -> str | None:
    """``model/lenet`` (or ``model=lenet``, ``model``) when the command line is ``--help <that>``."""
    for flag in ("--help", "-h"):
        if flag in args:
            i = args.index(flag)
            if i + 1 < len(args) and not args[i + 1].startswith("-"):
                return args[i + 1].replace("=", "/")
    return None


def option_help(conf_dir: Path, spec: str) -> str:
    """What ``python train.py --help <group>/<option>`` prints: each ``_target_`` of that YAML with its schema's fields
    (type, default, comment) and rules (:func:`labkit.schemas.base.docs`), then the YAML's own values; ``<group>``
    alone lists the group's options with their first comment line."""
    from omegaconf import OmegaConf

    from labkit import schemas
    from labkit.run.signatures import targets_in
    from labkit.schemas.base import docs

    group, _, option = spec.strip("/").partition("/")
    folder = Path(conf_dir) / group
    if not folder.is_dir():
        groups = _groups(conf_dir)
        raise ConfigError(f"--help {spec}: there is no config group '{group}'. "
                          f"{checks.did_you_mean(group, groups)} Groups: {', '.join(groups)}".replace("  ", " "))
    options = sorted(p.stem for p in folder.glob("*.yaml"))
    if not option:
        lines = [f"{group}: {len(options)} options (python train.py --help {group}/<option> for one)"]
        for name in options:
            first = next((ln.lstrip("# ").strip() for ln in (folder / f"{name}.yaml").read_text().splitlines()
                          if ln.startswith("#")), "")
            lines.append(f"  {name:<28} {first}"[:118])
        return "\n".join(lines)
    path = folder / f"{option}.yaml"
    if not path.is_file():
        raise ConfigError(f"--help {spec}: {group} has no option '{option}': it is one of {', '.join(options)}. "
                          f"{checks.did_you_mean(option, options)}".strip())
    found = [schemas.of(t) for t in sorted(targets_in(path))]
    parts = [docs(cls) for cls in found if cls is not None] or [f"{group}/{option} names no _target_ with a schema"]
    parts.append(f"values in conf/{group}/{option}.yaml:\n" + "\n".join(
        "  " + line for line in OmegaConf.to_yaml(OmegaConf.load(path)).splitlines() if line.strip()))
    return "\n\n".join(parts)


# ----- the pre-flight --------------------------------------------------------------------------------------------
def _parse(overrides: Sequence[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser, parsed = OverridesParser.create(), []
    for text in overrides:
        try:
            parsed += parser.parse_overrides([text])
        except OverrideParseException as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else "syntax error"
            raise ConfigError(f"cannot read the override '{text}': {first}. Write key=value (group=option for a "
                              "config group, +key=value to add a key); quote values with spaces or special "
                              "characters, e.g. 'data.root=\"/my data\"'. See "
                              "https://hydra.cc/docs/advanced/override_grammar/basic/") from None
    return parsed


def _compose(conf_dir: Path, config_name: str, overrides: Sequence[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3", job_name=config_name):
            return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def _explain(e: Exception, conf_dir: Path, config_name: str, overrides: Sequence[str]) -> Exception:
    """Hydra's composition error as labkit's one paragraph, with a 'did you mean' where one can be found."""
    from omegaconf import DictConfig, OmegaConf

    text = str(e)
    m = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if m:  # group=option with an option that does not exist
        group, option = m.groups()
        block = text.split("Available options", 1)[-1].split("Config search path", 1)[0]
        options = re.findall(r"^\t(\S+)$", block, re.M)
        return ConfigError(f"{group}={option} is invalid: {group} must be one of {', '.join(options)} "
                           f"(conf/{group}/*.yaml). {checks.did_you_mean(option, options, group + '=')}".strip())
    m = re.search(r"Could not override '([^']+)'", text)
    cause = e.__cause__
    full_key = getattr(cause, "full_key", None)
    typed = _type_error(cause, full_key, overrides)
    if typed is not None:  # a value the key's schema (labkit/schemas/) cannot hold
        return typed
    if m and full_key:  # a key that is not in the config (without +)
        override = m.group(1)
        path, _, key = str(full_key).rpartition(".")
        try:  # the config without the bad override, to list the keys that do exist there
            rest = [o for o in overrides if o.split("=", 1)[0].lstrip("~+") != override]
            cfg = _compose(conf_dir, config_name, rest)
        except Exception:  # (any of Hydra's errors) composing without it fails too: the plain message
            return ConfigError(message(e))
        node = OmegaConf.select(cfg, path) if path else cfg
        keys = {str(k) for k in node.keys()} if isinstance(node, DictConfig) else set()
        if not path:
            keys.discard("hydra")
        value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == override), "...")
        where = f"'{path}' has no key '{key}'" if path else "there is no such top-level key"
        if path and key in cfg and not isinstance(cfg[key], DictConfig):  # e.g. model.init_from -> init_from
            return ConfigError(f"unknown key '{override}': {key} is a top-level key, not part of '{path}': write "
                               f"{key}={value}")
        plus = "" if checks.did_you_mean(key, keys) else f" (to add a key the config does not have, write " \
                                                           f"+{override}={value})"
        return checks.unknown_key(path, key, keys - {"_target_", "_partial_", "_recursive_", "_convert_"},
                                  where + plus + ".")
    m = re.search(r"An item is already at '([^']+)'", text)
    if m:  # +key=value for a key the config already has
        key = m.group(1)
        value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+") == key), "...")
        return ConfigError(f"+{key}: {key} is already in the config, so there is nothing to add: drop the + and "
                           f"write {key}={value} (++{key}={value} sets it whether or not it exists)")
    if re.search(r"Could not override '([^']+)'\. No match in the defaults list", text):
        name = re.search(r"Could not override '([^']+)'", text).group(1)
        return ConfigError(f"{name} is not a config group of {config_name}.yaml, so it cannot be overridden. "
                           f"{checks.did_you_mean(name, _groups(conf_dir))} Groups: {', '.join(_groups(conf_dir))}")
    return ConfigError(message(e))


# OmegaConf's names of the types a schema's field has -> what a value must be
_TYPE_WORDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "String": "a string"}


def _type_error(cause: BaseException | None, full_key: Any, overrides: Sequence[str]) -> Exception | None:
    """OmegaConf's refusal of a value whose type the key's schema does not allow, as labkit's one paragraph
    (``data.batch_size=abc is invalid: it must be an integer``); None for any other error."""
    from omegaconf.errors import ValidationError

    if not isinstance(cause, ValidationError) or not full_key:
        return None
    key = str(full_key)
    value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+~") == key), None)
    text = str(cause)
    m = re.search(r"could not be converted to (\w+)", text)
    if m:
        must = _TYPE_WORDS.get(m.group(1), f"of type {m.group(1)}")
    elif "is not a valid bool" in text:
        must = "true or false"
    elif "is not a ListConfig, list or tuple" in text:
        must = "a list in brackets, e.g. [0.5] or [0.5, 0.5, 0.5]"
    elif "Non optional field cannot be assigned None" in text:
        must = "a value, not null"
    else:
        must = "a value of the type its schema declares"
    return checks.invalid(key, _typed(value) if value is not None else "...", must,
                          "python train.py --help " + key.split(".", 1)[0] + "=<option> lists the keys and types")


def _typed(text: str):
    """An override's value as Hydra reads it (``0.5`` a number, ``abc`` a string), for the message."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(f"k={text}").value()
    except Exception:  # noqa: BLE001  (a value Hydra cannot read: shown as typed)
        return text


def _groups(conf_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(conf_dir)) for p in Path(conf_dir).rglob("*") if p.is_dir())


class _Pending:
    """The pre-flight of the command being run (set by :func:`run` while Hydra runs): what :class:`Preflight` checks
    with, and what it found (the script's checked result, e.g. train.py's plan)."""

    def __init__(self, conf_dir: Path, config_name: str, check: Callable | None, command: str):
        self.conf_dir, self.config_name, self.check, self.command = conf_dir, config_name, check, command
        self.result: Any = None


_PENDING: _Pending | None = None


class _Stop(BaseException):
    """How :class:`Preflight` stops Hydra before the job: ``error`` (a refusal), or ``finished`` (nothing to do).
    A BaseException, because Hydra turns a callback's Exception into a warning and goes on."""

    def __init__(self, error: BaseException | None = None, finished: "Finished | None" = None):
        super().__init__(str(error or finished))
        self.error, self.finished = error, finished


class Preflight(Callback):
    """A Hydra callback (``hydra.callbacks.labkit_preflight`` in conf/hydra/default.yaml and the other scripts'
    configs): the pre-flight, on the one config Hydra composed, before Hydra creates the run directory, ``.hydra/``
    or the log file (``on_run_start``). It names a missing mandatory value and runs the script's ``check(cfg[,
    overrides])`` (train.py: the run's plan, made once); a sweep's jobs check themselves. Outside :func:`run` (no
    pending pre-flight) it does nothing."""

    def on_run_start(self, config, **kwargs: Any) -> None:
        pending = _PENDING
        if pending is None:
            return
        try:
            self._check(pending, config)
        except Exception as e:
            raise _Stop(error=e) from e
        if isinstance(pending.result, Finished):
            raise _Stop(finished=pending.result)

    @staticmethod
    def _check(pending: _Pending, config) -> None:
        from omegaconf import OmegaConf, open_dict

        from labkit.run.validate import check_missing

        cfg = OmegaConf.create(OmegaConf.to_container(config, resolve=False))
        choices = dict(config.hydra.runtime.choices)
        # the command line as given: the job's overrides and Hydra's own (hydra.run.dir=...: the folder it will use)
        overrides = [str(o) for o in (*config.hydra.overrides.hydra, *config.hydra.overrides.task)]
        with open_dict(cfg):
            del cfg["hydra"]
        usage = _usage((Path(pending.conf_dir) / f"{pending.config_name}.yaml").read_text())
        check_missing(cfg, f"{usage} (--help lists the options)" if usage else "", choices, pending.command)
        if pending.check is None:
            return
        if len(inspect.signature(pending.check).parameters) > 1:
            pending.result = pending.check(cfg, overrides)  # e.g. resume=...: which keys the command line changes
        else:
            pending.result = pending.check(cfg)


def checked() -> Any:
    """What the pre-flight's check returned for the command being run (train.py: its plan); None outside :func:`run`,
    in a sweep's jobs (each plans itself) and before the check ran."""
    return _PENDING.result if _PENDING is not None else None


class Finished(str):
    """What a script's ``check`` returns when there is nothing to do (a finished run resumed without a larger
    limit): :func:`run` prints it and exits 0 without starting Hydra, so nothing is written."""


# ----- the entry point -------------------------------------------------------------------------------------------
def run(config_name: str, fn: Callable, check: Callable | None = None, *, help: bool = False,
        config_dir: str | Path | None = None, argv: Sequence[str] | None = None, doc: str | None = None) -> Any:
    """Run ``fn(cfg)`` as a Hydra app on ``<config_dir>/<config_name>.yaml`` (default: ``conf/`` beside the file
    that defines ``fn``), after the pre-flight; user errors print one paragraph and exit 1.

    ``check``: the script's own checks of the config Hydra composed, run by the :class:`Preflight` callback before
    Hydra creates anything (the config is composed once). What it returns, the job reads with :func:`checked`
    (train.py: the plan, made once); a :class:`Finished` is printed instead and nothing runs.
    ``help``: answer ``--help`` with ``doc`` (default: the docstring of ``fn``'s module) and the config's own options
    instead of Hydra's listing.
    ``argv``: the command-line arguments (default ``sys.argv[1:]``; tests pass them).

    While it runs, labkit's console settings apply (:func:`labkit.core.console.settings`: its warning filters, quiet
    set-up loggers, no colour codes in a log file), and old import paths that saved configs name resolve
    (:func:`labkit._compat.install`), and the run-directory resolvers are registered; importing labkit sets none of
    this.
    """
    _compat.install()
    runs.register_resolvers()
    with console.settings():
        import hydra

        args = list(sys.argv[1:] if argv is None else argv)
        debug = _debug(args)
        args = [a for a in args if a != DEBUG_FLAG]
        conf_dir = Path(config_dir) if config_dir else Path(inspect.getfile(fn)).resolve().parent / "conf"
        script = Path(sys.argv[0]).name if argv is None else f"{config_name}.py"
        spec = _help_topic(args)
        if spec is not None:  # --help <group>[/<option>]: the option's schema
            try:
                print(option_help(conf_dir, spec))
            except ConfigError as e:
                fail(e)
            return None
        if help and ("--help" in args or "-h" in args):
            print(help_text(conf_dir, config_name, doc if doc is not None else getattr(fn, "__globals__", {}).get("__doc__")))
            return None
        # Hydra (and the processes Lightning starts for DDP) read HYDRA_FULL_ERROR; restored afterwards for callers in
        # the same process (tests)
        from labkit.run.rendezvous import SCRIPT_ENV

        saved_argv, saved_env, saved_mark = sys.argv, os.environ.get("HYDRA_FULL_ERROR"), os.environ.get(_LABKIT_SET)
        saved_script = os.environ.get(SCRIPT_ENV)
        if debug:
            os.environ["HYDRA_FULL_ERROR"] = "1"
            os.environ.pop(_LABKIT_SET, None)
        global _PENDING
        try:
            overrides = [a for a in args if not a.startswith("-")]
            flags = {a.split("=", 1)[0] for a in args if a.startswith("-")}
            try:
                if not flags & _NO_PREFLIGHT:  # (--cfg job, -cn <name>: their values are no overrides)
                    _parse(overrides)  # an override Hydra cannot read: one paragraph, before Hydra starts
            except ConfigError as e:
                if debug:
                    raise
                fail(e)
            _PENDING = _Pending(conf_dir, config_name, check, f"python {script}")

            from hydra.core.global_hydra import GlobalHydra

            GlobalHydra.instance().clear()  # hydra.main initializes it again
            # -m/--multirun anywhere on the line (Hydra's argparse wants its switches before the overrides)
            modes = [a for a in args if a in ("-m", "--multirun")]
            sys.argv = [saved_argv[0] if argv is None else script, *modes, *[a for a in args if a not in modes]]
            # the script, for a sweep job's DDP ranks to run again from a launcher's worker process (labkit.run.rendezvous)
            os.environ[SCRIPT_ENV] = os.path.abspath(sys.argv[0])
            # Hydra's own steps around the job (writing .hydra/, a launcher) raise to here instead of printing a traceback,
            # so that a full disk there is one paragraph too; anything else is reported as Hydra reports it
            if not debug:
                os.environ["HYDRA_FULL_ERROR"] = os.environ[_LABKIT_SET] = "1"
            with quiet_about_a_full_disk(), hydra_internals.mode_answered_by(mode.mode, mode.UNKNOWN):
                try:
                    return hydra.main(version_base="1.3", config_path=str(conf_dir), config_name=config_name)(fn)()
                except _Stop as stop:  # the pre-flight refused the run, or found nothing to do: Hydra created nothing
                    if stop.finished is not None:
                        print(stop.finished, flush=True)
                        return None
                    e = stop.error
                    if debug or not is_user_error(e):
                        raise e from None
                    fail(e)
                except Exception as e:  # anything Hydra's run or the job raised: told apart by kind below
                    if debug:
                        raise
                    from hydra.errors import ConfigCompositionException, MissingConfigException

                    if isinstance(e, (ConfigCompositionException, MissingConfigException)):
                        fail(_explain(e, conf_dir, config_name, overrides))  # composing the command line failed
                    if files.is_disk_full(e):
                        fail(files.disk_full(e, None if e.filename else hydra_internals.file_being_saved(e)))
                    if is_user_error(e):
                        fail(e)  # the job refused it: one paragraph (its record is written already)
                    _report_as_hydra_does(e)
        finally:
            _PENDING = None
            runs.planned_run_dir = None
            sys.argv = saved_argv
            for name, saved in (("HYDRA_FULL_ERROR", saved_env), (_LABKIT_SET, saved_mark), (SCRIPT_ENV, saved_script)):
                if saved is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = saved

