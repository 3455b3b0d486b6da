"""labkit uses other libraries' private names (``_name``) in labkit/adapters only, one module per library.

Each adapter function is exercised here on a small real object of the installed library: when a release renames or
reshapes what it relies on, its test fails naming the library and its version (and the adapter to fix). The scan at
the end keeps every other module of labkit/ and hydra_plugins/ on public APIs."""
from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import pickle
import subprocess
import sys
import textwrap
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from conftest import ROOT


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "(not installed)"


@contextlib.contextmanager
def private_api(dist: str, adapter: str, what: str):
    """Any failure inside becomes one message naming the library, its installed version and the adapter to fix."""
    try:
        yield
    except Exception as e:
        pytest.fail(f"{dist} {_version(dist)}: {what} is gone or changed its shape ({type(e).__name__}: {e}). "
                    f"labkit/adapters/{adapter} relies on it: adapt that function (and the upper bound of {dist} in "
                    f"pyproject.toml)", pytrace=False)


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


# ----- lightning ------------------------------------------------------------------------------------------------------
def test_lightning_checkpoint_saved_at_the_current_step(tmp_path):
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import ModelCheckpoint

    from labkit.adapters import lightning

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    wrote = []

    class SaveAtStep2(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 2:
                wrote.append(lightning.save_unmonitored_checkpoint_now(checkpoint, trainer))
                wrote.append(lightning.save_unmonitored_checkpoint_now(checkpoint, trainer))  # same step: no

    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="last", save_top_k=1)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=2)
    with private_api("pytorch-lightning", "lightning.py", "ModelCheckpoint._save_none_monitor_checkpoint"):
        trainer = pl.Trainer(max_steps=3, callbacks=[checkpoint, SaveAtStep2()], logger=False,
                             enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
        trainer.fit(Tiny(), data)
        assert wrote == [True, False]
        assert torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"] >= 2


def test_lightning_csv_logger_continues_its_metrics_file(tmp_path):
    from pytorch_lightning.loggers import CSVLogger
    from pytorch_lightning.loggers.csv_logs import ExperimentWriter

    from labkit.adapters import lightning

    with private_api("pytorch-lightning", "lightning.py", "CSVLogger._experiment/_fs, ExperimentWriter._check_log_dir_exists"):
        assert callable(ExperimentWriter._check_log_dir_exists) and _params(ExperimentWriter._check_log_dir_exists) == ["self"]
        assert "_check_log_dir_exists" in inspect.getsource(ExperimentWriter.__mro__[1].__init__)  # its constructor calls it
        for session, loss in enumerate((0.5, 0.25)):
            logger = CSVLogger(tmp_path, name="", version="")
            assert logger._experiment is None
            writer = lightning.appending_csv_experiment(logger)
            assert isinstance(writer, ExperimentWriter) and logger.experiment is writer
            assert lightning.appending_csv_experiment(logger) is writer  # made once
            logger.log_metrics({"train/loss": loss}, step=session)
            logger.finalize("success")  # saves through the writer the logger keeps
        rows = (Path(logger.log_dir) / "metrics.csv").read_text().splitlines()
        assert rows[0].split(",") == ["step", "train/loss"] and [r.split(",")[1] for r in rows[1:]] == ["0.5", "0.25"]
    cls = type(writer)
    assert pickle.loads(pickle.dumps(cls)) is cls and cls is lightning.AppendingExperimentWriter


def test_lightning_mlflow_logger_logs_into_an_existing_run(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from pytorch_lightning.loggers import MLFlowLogger

    from labkit.adapters import lightning

    with private_api("pytorch-lightning", "lightning.py", "MLFlowLogger._mlflow_client/_run_id"):
        logger = MLFlowLogger(experiment_name="e", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
        client = lightning.mlflow_client(logger)
        assert isinstance(client, MlflowClient)
        experiment = client.create_experiment("e")
        run = client.create_run(experiment)
        assert lightning.mlflow_run_id(logger) is None  # no run started by asking
        lightning.mlflow_use_run(logger, run.info.run_id)
        assert lightning.mlflow_run_id(logger) == run.info.run_id
        assert logger.run_id == run.info.run_id  # the public property starts no run of its own
        logger.log_metrics({"m": 1.0}, step=0)
        assert [r.info.run_id for r in client.search_runs([experiment])] == [run.info.run_id]
        assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}


def test_lightning_wandb_logger_init_arguments_and_run(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from pytorch_lightning.loggers import WandbLogger

    from labkit.adapters import lightning

    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    with private_api("pytorch-lightning", "lightning.py", "WandbLogger._wandb_init/_experiment"):
        logger = WandbLogger(name="n", save_dir=str(tmp_path), mode="disabled", settings={"silent": True})
        init = lightning.wandb_init_kwargs(logger)
        assert isinstance(init, dict) and init["name"] == "n" and init["mode"] == "disabled" and "anonymous" in init
        source = inspect.getsource(type(logger).experiment.fget)
        assert "**self._wandb_init" in source and "self._experiment" in source  # the dict wandb.init gets; the run
        assert lightning.wandb_run_if_started(logger) is None
        try:
            run = logger.experiment  # mode=disabled: no process, no files
            assert run is not None and lightning.wandb_run_if_started(logger) is run
            run.finish()
        finally:
            wandb.teardown()  # W&B's settings of this process: loaded afresh by the next test that uses W&B


# ----- hydra ----------------------------------------------------------------------------------------------------------
def test_hydra_reports_an_error_as_it_reports_a_failed_job(monkeypatch, capsys):
    from labkit.adapters import hydra

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    def users_code():
        raise ValueError("the reason")

    def run_job():  # as Hydra's hydra.core.utils.run_job: the report starts below it
        users_code()

    with private_api("hydra-core", "hydra.py", "hydra._internal.utils.run_and_report"):
        with pytest.raises(SystemExit) as stopped:
            hydra.run_and_report(run_job)
        assert stopped.value.code == 1
        err = capsys.readouterr().err
        assert "in users_code" in err and "ValueError: the reason" in err and "HYDRA_FULL_ERROR=1" in err
        assert "in run_job" not in err  # shortened to the user's frames


def test_hydra_failed_job_exception():
    from hydra.core.utils import JobReturn, JobStatus

    from labkit.adapters import hydra

    with private_api("hydra-core", "hydra.py", "JobReturn._return_value"):
        ret = JobReturn()
        ret.return_value, ret.status = ValueError("boom"), JobStatus.FAILED  # the public setter, as run_job sets it
        assert isinstance(hydra.failed_job_exception(ret), ValueError) and str(hydra.failed_job_exception(ret)) == "boom"
        done = JobReturn()
        done.return_value, done.status = 0.5, JobStatus.COMPLETED
        assert hydra.failed_job_exception(done) is None and done.return_value == 0.5


def test_hydra_names_the_file_it_was_writing(tmp_path):
    import hydra.core.utils as hydra_utils
    from omegaconf import OmegaConf

    from labkit.adapters import hydra

    (tmp_path / "a-file").write_text("")
    output_dir = tmp_path / "a-file" / ".hydra"  # below a file: cannot be created
    with private_api("hydra-core", "hydra.py", "hydra.core.utils._save_config(cfg, filename, output_dir)"):
        assert _params(hydra_utils._save_config)[:3] == ["cfg", "filename", "output_dir"]
        with pytest.raises(OSError) as failed:
            hydra_utils._save_config(OmegaConf.create({"a": 1}), "config.yaml", output_dir)
        assert hydra.file_being_saved(failed.value) == output_dir / "config.yaml"
    assert hydra.file_being_saved(ValueError("elsewhere")) is None


def test_hydra_asks_for_the_mode_before_composing_for_it(tmp_path):
    """``mode_answered_by``: Hydra's ``Hydra.get_mode(config_name, overrides)`` asks the answer first (with the search
    path's sources), and composes only when the answer is the ``unknown`` marker."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from labkit.adapters import hydra

    (tmp_path / "app.yaml").write_text("hydra:\n  mode: MULTIRUN\nx: 1\n")
    asked, unknown = [], object()

    def answer(sources, config_name, overrides):
        asked.append((sources, config_name, overrides))
        return unknown if "x=2" in overrides else "RUN"

    with private_api("hydra-core", "hydra.py", "hydra._internal.hydra.Hydra.get_mode / config_loader.get_sources()"):
        assert _params(Hydra.get_mode) == ["self", "config_name", "overrides"]
        GlobalHydra.instance().clear()
        try:
            app = Hydra.create_main_hydra2(task_name="app", config_search_path=create_config_search_path(str(tmp_path)))
            assert app.get_mode(config_name="app", overrides=[]) == RunMode.MULTIRUN  # Hydra's own: it composes
            with hydra.mode_answered_by(answer, unknown):
                assert app.get_mode(config_name="app", overrides=["x=1"]) == RunMode.RUN  # the answer, not the file's
                assert app.get_mode(config_name="app", overrides=["x=2"]) == RunMode.MULTIRUN  # unknown: composed
            assert Hydra.get_mode(app, config_name="app", overrides=["x=1"]) == RunMode.MULTIRUN  # restored
        finally:
            GlobalHydra.instance().clear()
    assert [a[1:] for a in asked] == [("app", ["x=1"]), ("app", ["x=2"])]
    assert ("file", str(tmp_path)) in asked[0][0]


# ----- optuna ---------------------------------------------------------------------------------------------------------
def test_optuna_trial_attributes_through_the_storage(tmp_path):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from labkit.adapters import optuna as adapter

    study = optuna.create_study(storage=JournalStorage(JournalFileBackend(str(tmp_path / "s.log"))))
    live, told = study.ask(), study.ask()
    study.tell(told, 1.0)
    with private_api("optuna", "optuna.py", "Study._storage, FrozenTrial._trial_id"):
        frozen = {t.number: t for t in study.get_trials(deepcopy=False)}
        adapter.set_trial_user_attr(study, frozen[live.number], "k", 1)  # another worker's trial: a FrozenTrial
        assert study.trials[live.number].user_attrs["k"] == 1
        assert adapter.stored_user_attrs(study, live) == {"k": 1}  # what others wrote, read through the live trial
        with pytest.raises(Exception, match="finished|complete|COMPLETE"):
            adapter.set_trial_user_attr(study, frozen[told.number], "k", 2)


# ----- wandb ----------------------------------------------------------------------------------------------------------
def test_wandb_base_url_from_its_settings_file(tmp_path):
    pytest.importorskip("wandb")
    from wandb.sdk import wandb_setup

    with private_api("wandb", "wandb.py", "wandb.sdk.wandb_setup._setup(start_service=False).settings.base_url"):
        assert "settings" in _params(wandb_setup._setup)  # (0.19: no start_service; the adapter reads the file)
    (tmp_path / "settings").write_text("[default]\nbase_url = http://saved-by-wandb-login.example:8080\n")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_CONFIG_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    code = "from labkit.adapters import wandb; print(wandb.base_url())"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    with private_api("wandb", "wandb.py", "wandb.sdk.wandb_setup._setup(start_service=False).settings.base_url"):
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.strip() == "http://saved-by-wandb-login.example:8080"


# ----- torch ----------------------------------------------------------------------------------------------------------
def test_torch_compiled_module_and_last_lr():
    import torch
    from torch import nn

    from labkit.adapters import torch as adapter

    net = nn.Linear(2, 1)
    with private_api("torch", "torch.py", "torch.compile's wrapper ._orig_mod"):
        compiled = torch.compile(net)  # the wrapper only: nothing is compiled before the first call
        assert compiled is not net and adapter.unwrap_compiled(compiled) is net and adapter.unwrap_compiled(net) is net
        assert all(k.startswith(adapter.COMPILED_PREFIX) for k in compiled.state_dict())
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with private_api("torch", "torch.py", "LRScheduler._last_lr (what get_last_lr() returns)"):
        for sched in (torch.optim.lr_scheduler.StepLR(opt, 1), torch.optim.lr_scheduler.ReduceLROnPlateau(opt)):
            adapter.set_last_lr(sched, [0.05])
            assert sched.get_last_lr() == [0.05]


def test_torch_batch_norm_layers_are_all_named():
    """labkit.callbacks.finetuning names every BatchNorm layer of torch.nn (publicly) instead of their private base."""
    from torch import nn

    from labkit.callbacks.finetuning import BATCH_NORMS

    base = getattr(nn.modules.batchnorm, "_BatchNorm", None)
    if base is None:
        pytest.skip(f"torch {_version('torch')} has no nn.modules.batchnorm._BatchNorm to compare with")

    def every(cls):
        return {cls} | {s for c in cls.__subclasses__() for s in every(c)}

    torch_ones = {c for c in every(base) - {base} if c.__module__.startswith("torch.nn.modules")}
    assert torch_ones <= {c for c in every(nn.Module) if issubclass(c, BATCH_NORMS)}, \
        f"torch {_version('torch')}: BatchNorm layers missing from BATCH_NORMS: {torch_ones - set(BATCH_NORMS)}"


# ----- numpy ----------------------------------------------------------------------------------------------------------
def test_numpy_core_globals_of_old_pickles():
    import numpy as np

    from labkit.adapters import numpy as adapter

    assert adapter.pickled_core_global("numpy", "ndarray") is None
    if int(np.__version__.split(".")[0]) < 2:
        assert adapter.pickled_core_global("numpy.core.multiarray", "_reconstruct") is None
        return
    with private_api("numpy", "numpy.py", "numpy._core.multiarray / numpy._core.numeric"):
        assert adapter.pickled_core_global("numpy.core.multiarray", "_reconstruct") is np.ndarray.__reduce__(
            np.zeros(1))[0]
        assert callable(adapter.pickled_core_global("numpy.core.multiarray", "scalar"))
        assert callable(adapter.pickled_core_global("numpy.core.numeric", "_frombuffer"))


# ----- the scan: private names outside labkit/adapters -----------------------------------------------------------------
FIRST_PARTY = ("labkit", "hydra_plugins")
ADAPTERS = "labkit/adapters/"
# namedtuple's public methods and fields, underscored so that they never clash with a field name
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}
# no file outside labkit/adapters is allowed a private name of another library (the config checks' OmegaConf node
# internals, once listed here, went with the schemas of issue 30): new private uses go to labkit/adapters
ALLOWED: dict[str, set[str]] = {}


def _private(name: str) -> bool:
    """``_name``: private; ``__dunder__``, ``__mangled`` and Hydra's config keys ``_target_`` are not."""
    return name.startswith("_") and not name.startswith("__") and not name.endswith("_")


def _sources(roots=FIRST_PARTY) -> dict[str, ast.Module]:
    files = sorted(p for r in roots for p in (ROOT / r).rglob("*.py"))
    return {p.relative_to(ROOT).as_posix(): ast.parse(p.read_text(), str(p)) for p in files}


def own_names(trees) -> set[str]:
    """Every name labkit's code defines: functions, classes, variables, arguments, and attributes set on ``self`` or
    ``cls`` (whether those belong to a library's base class is :func:`private_overrides`'s question)."""
    own: set[str] = set()
    for tree in trees:
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(n.name)
            elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                own.add(n.id)
            elif isinstance(n, ast.arg):
                own.add(n.arg)
            elif isinstance(n, ast.alias):
                own.add(n.asname or n.name.split(".")[0])
            elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store) and isinstance(n.value, ast.Name) \
                    and n.value.id in ("self", "cls"):
                own.add(n.attr)
    return own


def _third_party(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] not in FIRST_PARTY + ("__future__",)


def _private_module(module: str) -> bool:
    return any(_private(part) for part in module.split("."))


def private_uses(path: str, tree: ast.Module, own: set[str]) -> list[str]:
    """``path:line: what`` for each private name of another library that ``tree`` uses: an attribute ``x._name`` that
    labkit does not define itself, ``getattr(x, "_name")``, an import of ``_name`` or from a ``_module``."""
    found = []

    def flag(node, what):
        found.append(f"{path}:{node.lineno}: {what}")

    allowed = ALLOWED.get(path, set()) | NAMEDTUPLE_API
    for n in ast.walk(tree):
        if isinstance(n, ast.Attribute) and _private(n.attr) and n.attr not in own and n.attr not in allowed:
            flag(n, f"attribute .{n.attr}")
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and _third_party(n.module):
            if _private_module(n.module):
                flag(n, f"from {n.module} import ...")
            for a in n.names:
                if _private(a.name):
                    flag(n, f"from {n.module} import {a.name}")
        elif isinstance(n, ast.Import):
            for a in n.names:
                if _third_party(a.name) and _private_module(a.name):
                    flag(n, f"import {a.name}")
        elif isinstance(n, ast.Call) and isinstance(n.func, (ast.Name, ast.Attribute)):
            fn = n.func.id if isinstance(n.func, ast.Name) else n.func.attr
            first = n.args[0] if n.args else None
            if fn in ("getattr", "hasattr", "setattr", "delattr") and len(n.args) > 1 \
                    and isinstance(n.args[1], ast.Constant) and isinstance(n.args[1].value, str) \
                    and _private(n.args[1].value) and n.args[1].value not in own | allowed:
                flag(n, f"{fn}(..., {n.args[1].value!r})")
            elif fn in ("import_module", "__import__") and first is not None:
                texts = [c.value for c in ast.walk(first) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
                if any(_third_party(t) and (_private_module(t.strip(".")) or "._" in t) for t in texts):
                    flag(n, f"{fn}({ast.unparse(first)})")
    return found


def _third_party_privates(cls: type) -> set[str]:
    """The private names the library classes among ``cls``'s bases define or use on ``self``."""
    names: set[str] = set()
    for base in cls.__mro__[1:]:
        if base.__module__.split(".")[0] in FIRST_PARTY + ("builtins",):
            continue
        names |= {n for n in vars(base) if _private(n)}
        names |= _self_privates_of(base)
    return names


_SELF_PRIVATES: dict[type, set[str]] = {}


def _self_privates_of(cls: type) -> set[str]:
    if cls not in _SELF_PRIVATES:
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        except (OSError, TypeError, SyntaxError):  # a class without Python source (C) or none found
            tree = ast.Module(body=[], type_ignores=[])
        _SELF_PRIVATES[cls] = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and _private(n.attr)
                               and isinstance(n.value, ast.Name) and n.value.id in ("self", "cls")}
    return _SELF_PRIVATES[cls]


def _class_uses(node: ast.ClassDef) -> dict[str, int]:
    """The private names a class body defines or uses on ``self``/``cls``/``super()``, with a line of each."""
    uses: dict[str, int] = {}
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and _private(item.name):
            uses.setdefault(item.name, item.lineno)
        targets = item.targets if isinstance(item, ast.Assign) else [item.target] if isinstance(item, ast.AnnAssign) \
            else []
        for t in targets:
            if isinstance(t, ast.Name) and _private(t.id):
                uses.setdefault(t.id, item.lineno)
    for n in ast.walk(node):
        if isinstance(n, ast.Attribute) and _private(n.attr):
            v = n.value
            if (isinstance(v, ast.Name) and v.id in ("self", "cls")) or \
                    (isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "super"):
                uses.setdefault(n.attr, n.lineno)
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("getattr", "hasattr", "setattr") \
                and len(n.args) > 1 and isinstance(n.args[0], ast.Name) and n.args[0].id == "self" \
                and isinstance(n.args[1], ast.Constant) and isinstance(n.args[1].value, str) and _private(n.args[1].value):
            uses.setdefault(n.args[1].value, n.lineno)
    return uses


def private_overrides(path: str, module, tree: ast.Module) -> list[str]:
    """``path:line: what`` for each private name of a library base class that a class of ``module`` overrides, sets
    or reads on ``self`` (a subclass reaching into its base's internals). Classes are looked up in the imported
    ``module`` by name (a class built inside a function is looked up under the name it is published as)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        cls = getattr(module, node.name, None)
        if not isinstance(cls, type) or cls.__module__ != module.__name__:
            if any(not (isinstance(b, ast.Name) and b.id == "object") for b in node.bases):
                found.append(f"{path}:{node.lineno}: class {node.name} cannot be checked: not found as "
                             f"{module.__name__}.{node.name}")
            continue
        clash = _third_party_privates(cls)
        for name, line in sorted(_class_uses(node).items()):
            if name in clash:
                found.append(f"{path}:{line}: {node.name} uses {name}, private to a base class from another library")
    return found


def _module_name(path: str) -> str:
    return path[:-len(".py")].replace("/", ".").removesuffix(".__init__")


def test_no_private_third_party_names_outside_adapters():
    trees = _sources()
    own = own_names(tree for path, tree in trees.items() if not path.startswith(ADAPTERS))
    found = []
    for path, tree in trees.items():
        if path.startswith(ADAPTERS):
            continue
        found += private_uses(path, tree, own)
        found += private_overrides(path, importlib.import_module(_module_name(path)), tree)
    found.sort(key=lambda f: (f.split(":")[0], int(f.split(":")[1])))
    assert not found, ("private names of other libraries outside labkit/adapters (use a public API, or add a "
                       "documented function to labkit/adapters/<library>.py with a test in tests/test_adapters.py):\n"
                       + "\n".join(found))


def test_the_scan_finds_private_names(tmp_path, monkeypatch):
    """The scan above can fail: each kind of private use in a small module is found, labkit's own names are not."""
    snippet = textwrap.dedent('''
        import collections
        import optuna.storages._in_memory
        from hydra._internal.utils import _locate
        from pytorch_lightning.utilities.imports import _RICH_AVAILABLE
        from pytorch_lightning.callbacks import ModelCheckpoint
        from torch import nn


        def _helper():
            return 1


        class Mine:
            def __init__(self):
                self._state = 1


        class Keeper(ModelCheckpoint):
            def _remove_checkpoint(self, trainer, filepath):
                return None


        class Net(nn.Module):
            def forward(self, x):
                return self._parameters


        def uses(study, trial, sched, point, mine, cfg):
            sched._last_lr = [0.1]
            point = collections.namedtuple("P", "x")(1)._replace(x=2)
            import importlib
            importlib.import_module("numpy._core.multiarray")
            return (study._storage, trial._trial_id, getattr(sched, "_last_lr"), mine._state, _helper(), point,
                    cfg._target_)
    ''')
    (tmp_path / "snippet_module.py").write_text(snippet)
    monkeypatch.syspath_prepend(str(tmp_path))
    tree = ast.parse(snippet)
    own = own_names([tree])
    uses = [f.split(": ", 1)[1] for f in private_uses("snippet.py", tree, own)]
    assert sorted(uses) == sorted([
        "import optuna.storages._in_memory", "from hydra._internal.utils import ...",
        "from hydra._internal.utils import _locate", "from pytorch_lightning.utilities.imports import _RICH_AVAILABLE",
        "attribute ._last_lr", "attribute ._storage", "attribute ._trial_id", "getattr(..., '_last_lr')",
        "attribute ._parameters", "import_module('numpy._core.multiarray')"])
    overrides = [f.split(": ", 1)[1] for f in private_overrides("snippet.py", importlib.import_module("snippet_module"), tree)]
    assert overrides == ["Keeper uses _remove_checkpoint, private to a base class from another library",
                         "Net uses _parameters, private to a base class from another library"]
    # OmegaConf's node internals are found too, in any file (the config checks no longer need them)
    omegaconf_internals = ast.parse("def check(node, key):\n    return node._get_node(key)._is_missing()\n")
    for path in ("labkit/run/validate.py", "labkit/run/plan.py"):
        assert len(private_uses(path, omegaconf_internals, own_names([omegaconf_internals]))) == 2
