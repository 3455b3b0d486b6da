"""Fast refusals (issue 20, item 5): the pre-flight checks keys and values without importing torch or Lightning.

What a ``_target_`` accepts and checks comes from its schema (labkit/schemas/); the classes' ``check_args`` are the
schemas' rules. These tests keep the schemas and the classes from giving different answers: the same verdict on good
and bad values either way, targets from outside labkit still checked from the class itself, and no torch imported
for a refusal, also when newer releases than the installed ones are reported. How fast: ``benchmarks/refusals.py``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, make_cfg, sampled
from test_cli_errors import IN_PROCESS, NOTHING, write_run

from labkit.core.errors import ConfigError
from labkit.run import signatures


# ----- the schema is what the classes say -------------------------------------------------------------------------
@pytest.mark.parametrize("target", signatures.conf_targets())
def test_schema_and_class_paths_agree_on_every_conf_target(target):
    """The pre-flight's answer from the schema (no import) and from the class itself agree: every schema field is an
    argument, the same logged metrics, and for labkit's data modules and tasks the very same rule functions."""
    fast, slow = signatures.from_schema(target), signatures.read(target)
    assert fast is not None, f"{target} has no schema in labkit/schemas/"
    assert slow.params is None or fast.params <= slow.params | {"entity", "group", "tags", "notes", "job_type"}
    assert fast.name == slow.name
    if slow.logged_metrics is not None:
        assert fast.logged_metrics == slow.logged_metrics
    if target.startswith(("labkit.data", "labkit.tasks")):
        assert fast.rules == slow.rules and all(a is b for a, b in zip(fast.rules, slow.rules))
        assert all(fast.defaults[k] in (v, "???") or isinstance(v, tuple) for k, v in slow.defaults.items()
                   if k in fast.defaults)


def test_conf_targets_cover_the_groups_the_preflight_checks():
    targets = signatures.conf_targets()
    for t in ("pytorch_lightning.Trainer", "torch.optim.SGD", "torch.optim.lr_scheduler.OneCycleLR",
              "labkit.tasks.ClassificationTask", "labkit.data.DigitsDataModule", "labkit.models.LeNet",
              "labkit.models.zoo.resnet18", "pytorch_lightning.loggers.TensorBoardLogger",
              "labkit.callbacks.RunCheckpoint"):
        assert t in targets
    assert not any("${" in t for t in targets)


# ----- the same verdict either way ---------------------------------------------------------------------------------
GOOD = [
    (), ("data.batch_size=1",), ("task.optimizer.momentum=0.0",), ("task.optimizer.momentum=1.0",),
    ("task/optimizer=adam", "task.optimizer.betas=[0.0,0.999]"), ("task/optimizer=adamw",),
    ("task.freeze=backbone", "task.unfreeze_at_epoch=2", "task.unfreeze_lr_factor=0.5"),
    ("task=triplet", "model=embedding_net", "task/loss=pml_triplet_margin", "task/miner=semi_hard",
     "task.norm_reduction=mean"),
    ("task=siamese", "model=embedding_net", "task/loss=multi_similarity", "task/miner=multi_similarity",
     "task/distance=cosine", "task/reducer=avg_non_zero"),
    ("task=siamese", "model=embedding_net", "task.margin=0"),
    ("task=sparse_autoencoder", "model=conv_autoencoder", "task.reduction=sum"),
    ("task=denoising_autoencoder", "model=conv_autoencoder", "task.target=noisy"),
    ("task=autoencoder", "model=mlp_autoencoder", "task.log_images=0"),
    ("data=image_folder", "data.root=/nowhere", "data.num_classes=3", "data.split=[0.5,0.25,0.25]"),
    ("data=caltech101", "data.resize=224", "data.on_corrupt=error"),
    ("data=egocart", "data.similar_distance=0.5"),
    ("data.val_size=0", "data.hflip=0.0", "data.mean=[0.5]", "data.std=[0.25]"),
    ("data.color_jitter={brightness:0.2}",),
    ("callbacks=early_stopping", "callbacks.early_stopping.monitor=val/acc"),
    ("model=resnet18", "data=cifar10"), ("model=minialexnet_v4", "data=cifar100"),
    ("trainer.max_epochs=-1", "trainer.limit_train_batches=0.5"),
    ("task/scheduler=onecycle",), ("task/scheduler=step",), ("task/scheduler=cosine",),
    ("logger=many",), ("logger=csv",), ("callbacks=none",), ("optimized_metric=val/acc",),
    ("data.resample_tuples=1",),  # the schema's bool field reads 1 as true, as OmegaConf does
]
BAD = [  # besides the value cases of tests/test_cli_errors.py
    ("data=egocart", "data.keep_on_device=true"), ("data.color_jitter={hue:0.1}",),
    ("data=image_folder", "data.root=/x", "data.num_classes=3", "data.split=[0.5,0.5]"),
    ("task/optimizer=adam", "task.optimizer.eps=0"), ("task.unfreeze_lr_factor=0",),
    ("task=autoencoder", "model=conv_autoencoder", "task.log_images=-1"),
    ("task=triplet", "model=embedding_net", "task.norm_reduction=max"),
    ("+model.depth=3",), ("+trainer.max_epoch=3",), ("+callbacks.model_checkpoint.every=2",),
    ("+task.optimizer.momentun=0.9",), ("task/scheduler=step", "+task.scheduler.gama=0.5"),
    ("callbacks=early_stopping", "+callbacks.early_stopping.patiense=3"), ("model=resnet18", "+model.pretrain=true"),
]


def _cli_value_cases() -> list[tuple[str, ...]]:
    """The train.py cases of the command-line error table that need no files (their configs compose)."""
    out = []
    for item in IN_PROCESS:
        case = item.values[0] if hasattr(item, "values") else item
        if case.script == "train" and not case.data and case.absent == NOTHING and \
                not any(a.startswith(("resume=", "init_from=", "model.init_from=", "paths.")) for a in case.args):
            out.append(case.args)
    return out


def _verdict(cfg) -> str:
    from labkit.run.validate import validate

    try:
        validate(cfg)
    except Exception as e:  # ConfigError, or OmegaConf's for an interpolation that does not resolve
        return f"refused: {type(e).__name__}: {str(e).split(' Valid keys of ')[0]}"  # (the schema lists fewer)
    return "accepted"


@pytest.mark.parametrize("overrides", sampled(GOOD, keep=range(0, len(GOOD), 3)) + sampled(BAD, keep=range(0, len(BAD), 3))
                         + sampled(_cli_value_cases(), keep=[]),  # a third of each table fast; the CLI table's value
                         # cases run in the full suite (a sixth of them run fast in test_cli_errors.py)
                         ids=lambda o: " ".join(o)[:60] or "defaults")
def test_the_schemas_and_the_classes_give_the_same_verdict(overrides, tmp_path, monkeypatch):
    try:
        cfg = make_cfg(list(overrides), tmp_path)
    except Exception as e:  # refused by Hydra while composing (a typo without +): no _target_ is asked
        from hydra.errors import HydraException

        if overrides in GOOD or overrides in BAD:
            raise
        assert isinstance(e, HydraException), e  # Hydra's refusal, before any table or class is consulted
        return
    fast = _verdict(cfg)
    # every target read from its class (but Lightning's: its classes (the Trainer, EarlyStopping) declare no rules,
    # their schemas do)
    schema_of = signatures.from_schema
    monkeypatch.setattr(signatures, "from_schema",
                        lambda t: schema_of(t) if t.startswith("pytorch_lightning.") else None)
    slow = _verdict(cfg)
    assert fast == slow
    if overrides in GOOD:
        assert fast == "accepted"
    elif overrides in BAD:
        assert fast.startswith("refused")


def test_the_verdict_table_is_large_enough():
    assert len(GOOD) >= 20 and len(BAD) + len(_cli_value_cases()) >= 40


# ----- what has no schema is read from the class -----------------------------------------------------------
def test_a_target_from_outside_labkit_is_checked_from_its_class(tmp_path, monkeypatch):
    (tmp_path / "outside_widget.py").write_text(textwrap.dedent('''
        from labkit.core import checks

        def widget_rules(a):
            checks.positive_int("data.size", a["size"])

        class Base:
            def __init__(self, size: int = 4, colour: str = "red"):
                Widget.check_args(locals())

            check_args = staticmethod(widget_rules)

        class Widget(Base):
            def __init__(self, shiny: bool = False, **kwargs):
                super().__init__(**kwargs)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert signatures.from_schema("outside_widget.Widget") is None
    sig = signatures.of("outside_widget.Widget")
    assert sig.params == {"size", "colour", "shiny"} and sig.defaults["size"] == 4
    sig.check({"shiny": True})
    with pytest.raises(ConfigError, match="data.size=0 is invalid"):
        sig.check({"size": 0})
    with pytest.raises(ConfigError, match="cannot be imported"):
        signatures.of("outside_widget.Nothing")


def test_old_module_paths_of_saved_configs_use_the_schema():
    assert signatures.from_schema("labkit.callbacks.RunCheckpoint") == \
        signatures.from_schema("labkit.run.callbacks.RunCheckpoint")


# ----- no torch for a refusal ------------------------------------------------------------------------------------------
PROBE = """
import importlib.metadata, os, runpy, sys
if os.environ.get("NEWER"):  # a user who installed today's releases: every version one patch release ahead
    real = importlib.metadata.version
    def newer(dist):
        v = real(dist).split("+")[0].split(".")
        return ".".join([*v[:2], str(int(v[2]) + 1 if len(v) > 2 and v[2].isdigit() else 1)])
    importlib.metadata.version = newer
sys.argv = ["train.py", *sys.argv[1:]]
try:
    runpy.run_path("train.py", run_name="__main__")
    code = 0
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("torch", "pytorch_lightning", "lightning_fabric", "torchvision") if m in sys.modules)
print(f"HEAVY={heavy} CODE={code}", file=sys.stderr)
"""

REFUSALS = [
    ("data.batch_size=0", "data.batch_size=0 is invalid"),
    ("task.optimizer.momentum=1.5", "task.optimizer.momentum=1.5 is invalid"),
    ("task=triplet model=embedding_net task.miner=semihard", "Did you mean 'task/miner=semi_hard'?"),
    ("task=siamese model=embedding_net task/miner=semi_hard", "a miner needs a pytorch-metric-learning loss"),
    ("data=caltech101 data.resize=100", "data.resize=100 is invalid"),
    ("+data.colour_jitter=1", "Did you mean 'data.color_jitter'?"),
    ("+trainer.max_epoch=3", "Did you mean 'trainer.max_epochs'?"),
    ("trainer.max_epochs=-5", "trainer.max_epochs=-5 is invalid"),
    ("callbacks.model_checkpoint.monitor=val/accuracy", "ClassificationTask logs"),
    ("data=image_folder", "data.num_classes and data.root are not set"),
    ("init_from=/no/run", "does not exist"),
    ("resume=@run model=lenet_v2", "cannot change 'model'"),
]


@pytest.mark.parametrize("newer", sampled([False, True], keep=[0]), ids=["installed", "newer-patch-releases"])
@pytest.mark.parametrize("args,phrase", sampled(REFUSALS, keep=[0, 2, 9], unpack=True), ids=[r[0][:40] for r in REFUSALS])
def test_a_preflight_refusal_imports_no_torch(args, phrase, newer, tmp_path):
    """Also with importlib.metadata reporting newer releases of torch, torchvision and Lightning than installed:
    nothing in the pre-flight is keyed to a version."""
    if "@run" in args:
        write_run(tmp_path / "run", tmp_path)
    argv = [a.replace("@run", str(tmp_path / "run")) for a in args.split()]
    p = subprocess.run([sys.executable, "-c", PROBE, f"paths.log_dir={tmp_path / 'logs'}",
                        f"paths.data_dir={tmp_path / 'data'}", *argv], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "NEWER": "1" if newer else ""})
    assert "HEAVY=[] CODE=1" in p.stderr, p.stderr[-3000:]
    assert phrase in p.stderr and p.stderr.count("error: ") == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert not (tmp_path / "logs").exists()
