"""The schemas (labkit/schemas/) are the one interface of every ``_target_`` conf/ names: each constructor agrees
with its schema, Hydra composes every YAML through its schema (unknown keys and wrong types refused while composing),
and nothing depends on an installed version."""
from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import sampled
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException

from labkit import schemas
from labkit.core import checks
from labkit.run import signatures
from labkit.schemas.base import MISSING, defaults_of, docs, fields_of, rules_of

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TARGETS = signatures.conf_targets()


def _constructor(target: str) -> tuple[dict[str, inspect.Parameter], set[str]]:
    """The keyword arguments ``target`` takes, following ``**kwargs`` up its class hierarchy (a subclass's default
    wins), as a name -> Parameter mapping, and the names that labkit's own classes of the hierarchy declare."""
    obj = checks.locate(target)
    out: dict[str, inspect.Parameter] = {}
    labkit_own: set[str] = set()
    funcs = [c.__init__ for c in obj.__mro__ if "__init__" in vars(c)] if inspect.isclass(obj) else [obj]
    for fn in funcs:
        sig = inspect.signature(fn)
        for name, p in sig.parameters.items():
            if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                out.setdefault(name, p)
                if fn.__module__.startswith("labkit."):
                    labkit_own.add(name)
        if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            break
    return out, labkit_own


def _same(a, b) -> bool:
    norm = (lambda v: list(v) if isinstance(v, (tuple, list)) else v)
    return norm(a) == norm(b)


def test_every_conf_target_has_exactly_one_schema():
    assert len(TARGETS) > 50
    missing = [t for t in TARGETS if schemas.of(t) is None]
    assert not missing, f"targets in conf/ without a schema in labkit/schemas/: {missing}"
    unused = sorted(set(schemas.load_all()) - set(TARGETS))
    assert not unused, f"schemas no YAML of conf/ names: {unused}"


@pytest.mark.parametrize("target", TARGETS)
def test_constructor_and_schema_agree(target):
    """labkit's own classes: the same argument names and defaults as the schema (besides what labkit injects,
    e.g. a task's model). Third-party classes: every schema field is an argument, with the same default (the schema
    lists what every supported release takes, so a newer release's extras are not passed)."""
    cls = schemas.of(target)
    params, labkit_own = _constructor(target)
    fields = set(fields_of(cls))
    injected = set(getattr(cls, "injected", ()))
    passed_on = set(getattr(cls, "passed_on", ()))
    assert fields - passed_on <= set(params), f"{target}: schema fields it does not take: {sorted(fields - set(params))}"
    left_out = labkit_own - fields - injected
    assert not left_out, f"{target}: arguments of labkit's classes missing from schema {cls.__name__}: {left_out}"
    for name, default in defaults_of(cls).items():
        if name in passed_on:
            continue
        p = params[name]
        if default == MISSING and p.default is not inspect.Parameter.empty:
            continue  # the config must give what the constructor would default (e.g. an image folder's root)
        if p.default is inspect.Parameter.empty and name in getattr(cls, "filled", ()):
            assert default is None  # null in the config: labkit computes it
        elif p.default is inspect.Parameter.empty:
            assert default == MISSING, f"{target}.{name}: required by the constructor, default {default!r} in the schema"
        else:
            assert _same(default, p.default), f"{target}.{name}: schema default {default!r}, constructor {p.default!r}"


@pytest.mark.parametrize("target", [t for t in TARGETS if t.startswith("labkit.")])
def test_a_class_checks_its_arguments_with_its_schema_rules(target):
    """A class's ``check_args`` is its schema's ``check`` (written once): the same functions, level by level."""
    obj = checks.locate(target)
    if not inspect.isclass(obj):
        return
    class_rules = [k.__dict__["check_args"] for k in reversed(obj.__mro__) if "check_args" in vars(k)]
    class_rules = [r.__func__ if isinstance(r, staticmethod) else r for r in class_rules]
    schema_rules = list(rules_of(schemas.of(target)))
    for rule in class_rules:
        assert rule in schema_rules, f"{target}: check_args {rule.__qualname__} is not a rule of its schema"
    if target.startswith(("labkit.tasks", "labkit.data", "labkit.loggers")):
        assert class_rules == schema_rules, f"{target}: {class_rules} != {schema_rules}"


@pytest.mark.parametrize("overrides,phrase", [
    (["logger=mlflow", "logger.mlflow.busy_timeout_s=0"], "logger.mlflow.busy_timeout_s=0.0 is invalid"),
    (["logger=wandb", "logger.wandb.connect_timeout_s=-2"], "logger.wandb.connect_timeout_s=-2.0 is invalid"),
    (["callbacks=early_stopping", "callbacks.early_stopping.patience=-1"],
     "callbacks.early_stopping.patience=-1 is invalid"),
    # one schema, two nodes: the message names the node the value was given to
    (["callbacks.last_checkpoint.save_top_k=-5"], "callbacks.last_checkpoint.save_top_k=-5 is invalid"),
    (["callbacks.model_checkpoint.every_n_epochs=-1"], "callbacks.model_checkpoint.every_n_epochs=-1 is invalid"),
])
def test_callback_and_logger_rules_run_in_the_preflight(tmp_path, overrides, phrase):
    """validate() (the pre-flight, before any folder exists) runs the callbacks' and loggers' schema rules too,
    naming the node by where it is in the config."""
    from conftest import make_cfg

    from labkit.core.errors import ConfigError
    from labkit.run import validate

    with pytest.raises(ConfigError, match=phrase.replace(".", r"\.")):
        validate.validate(make_cfg(overrides, tmp_path))


def test_a_task_logs_what_its_schema_declares():
    for target in TARGETS:
        cls = schemas.of(target)
        if cls.schema_group == "task":
            assert checks.locate(target).logged_metrics == cls.logged_metrics


def _compose(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.mark.parametrize("group", sampled(["model", "data", "task", "trainer"], keep=[1, 2, 3]))  # (40 models: slow)
def test_every_option_composes_typed(group):
    """Each YAML of the group composes through its schema: the node's type is the schema."""
    for path in sorted((CONF / group).glob("*.yaml")):
        option = path.stem
        extra = ["data.root=/nowhere", "data.num_classes=3"] if option == "image_folder" else []
        cfg = _compose(f"{group}={option}", *extra)
        node = cfg[group]
        target = node._target_.replace("${.arch}", str(node.get("arch")))
        assert type(node._metadata.object_type).__name__ == "type" and \
            node._metadata.object_type is schemas.of(target), f"{group}={option} is not typed by its schema"


def test_unknown_keys_and_wrong_types_are_refused_while_composing():
    with pytest.raises(ConfigCompositionException):
        _compose("data.batch_size=abc")
    with pytest.raises(ConfigCompositionException):
        _compose("model.dropout=0.5")  # LeNet has no dropout
    with pytest.raises(ConfigCompositionException):
        _compose("task/optimizer=adam", "task.optimizer.betas=3")
    cfg = _compose("model=minialexnet_v4", "model.dropout=0.25", "trainer.max_epochs=3")
    assert cfg.model.dropout == 0.25 and cfg.trainer.max_epochs == 3


def test_a_wrong_type_is_one_paragraph_naming_the_key(tmp_path):
    r = subprocess.run([sys.executable, "train.py", "data.batch_size=abc", f"paths.log_dir={tmp_path}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: data.batch_size='abc' is invalid: it must be an integer")
    assert "Traceback" not in r.stderr and not any(tmp_path.iterdir())


def test_schemas_import_no_torch_and_name_no_version():
    code = ("import sys, labkit.schemas as s; s.load_all(); import labkit.run.signatures as g; "
            "[g.of(t) for t in s.load_all()]; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'pytorch_lightning', 'lightning', 'torchvision')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    for path in (ROOT / "labkit").rglob("*.py"):
        assert "VERSIONS" not in path.read_text(), f"{path}: something keyed to installed versions"


@pytest.mark.slow
def test_docs_from_the_schema_name_each_field_with_type_default_and_comment():
    text = docs(schemas.of("labkit.data.CIFAR10DataModule"))
    assert "batch_size" in text and "int = 64" in text and "the global training batch" in text
    assert "rules:" in text and "positive integers" in text
    for cls in schemas.load_all().values():
        lines = docs(cls).splitlines()
        assert all(f in docs(cls) for f in fields_of(cls)), cls
        assert lines[0].startswith(f"{cls.schema_group}: {cls.__name__}")


def test_the_help_prints_an_options_schema():
    r = subprocess.run([sys.executable, "train.py", "--help", "data/cifar10"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "batch_size" in r.stdout and "int = 64" in r.stdout and "CIFAR10DataModule" in r.stdout
    r = subprocess.run([sys.executable, "train.py", "--help", "data/nothing"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and "data/nothing" in r.stderr and "cifar10" in r.stderr


def test_builtin_reports_are_declared_where_they_register():
    from labkit.evaluation import BUILTIN, REPORTS, _load_builtin

    _load_builtin()
    mine = {n for n, fn in REPORTS.items() if fn.__module__.startswith("labkit.evaluation.")}
    assert mine == set(BUILTIN)
    assert all(REPORTS[n].__module__ == m for n, m in BUILTIN.items())


def test_schema_dataclasses_are_frozen_in_shape():
    """Every registered schema is a dataclass whose _target_ default is its target."""
    for target, cls in schemas.load_all().items():
        assert dataclasses.is_dataclass(cls)
        assert {f.name: f.default for f in dataclasses.fields(cls)}["_target_"] == target
