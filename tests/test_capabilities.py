"""Declared capabilities: what a task can do (its reports, headline figures, embedding, reconstruction) is declared
on the task class, with defaults on :class:`labkit.tasks.base.LabTask`, and what a report's headline figures are is
declared where it is registered; callers read the declarations instead of probing tasks and networks."""
from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from omegaconf import OmegaConf
from test_summary import write_job

from labkit.core.errors import ConfigError, IncompatibleError
from labkit.evaluation import HEADLINES, REPORTS, register, report_headlines
from labkit.tasks import ClassificationTask, LabTask, SiameseTask, TripletTask
from labkit.tasks.autoencoder import AutoencoderTask, DenoisingAutoencoderTask, SparseAutoencoderTask

LENET = {"_target_": "labkit.models.LeNet", "in_channels": 1, "image_size": 28, "num_classes": 10}
EMBEDDING_NET = {"_target_": "labkit.models.embedding.EmbeddingNet", "in_channels": 1, "image_size": 28,
                 "embedding_size": 16}
CONV_AE = {"_target_": "labkit.models.autoencoders.ConvAutoencoder", "in_channels": 1, "image_size": 28}
ENCODER_CLASSIFIER = {"_target_": "labkit.models.autoencoders.EncoderClassifier", "autoencoder": CONV_AE,
                      "num_classes": 10}
PROBE = "capabilities_probe"  # a report registered by these tests only


def labkit_task_classes() -> list[type]:
    """Every LabTask subclass defined in labkit.tasks (MetricTask included), found by walking the hierarchy."""
    found, todo = [], [LabTask]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("labkit.tasks.") and sub not in found:
                found.append(sub)
    return found


class ProbeTask(LabTask):
    """A task from outside labkit that declares the probe report and its headline figure."""

    evaluations = (PROBE,)
    headline_metrics = ("test/loss", f"{PROBE}/score")


class PlainTask(LabTask):
    """A task from outside labkit that declares nothing: LabTask's defaults."""


class ReconstructingTask(LabTask):
    reconstructs = True


@pytest.fixture
def probe_report():
    """Register report PROBE (headline: score) for one test; yields the names of the tasks it was called with."""
    calls: list[str] = []

    @register(PROBE, headlines=("score",))
    def report(task, data, cfg, out_dir):
        calls.append(type(task).__name__)
        return {"score": 0.25, "other": 0.5}

    yield calls
    REPORTS.pop(PROBE, None)
    HEADLINES.pop(PROBE, None)


# ----- the declarations ----------------------------------------------------------------------------------------
def test_labtask_declares_the_defaults_every_task_inherits():
    assert LabTask.evaluations == () and LabTask.headline_metrics == ("test/loss",)
    assert LabTask.embeds is False and LabTask.reconstructs is False
    assert LabTask.monitor == ("val/loss", "min") and LabTask.logged_metrics == ()
    for name in ("evaluations", "headline_metrics", "embeds", "reconstructs"):
        assert name in vars(LabTask), name  # declared on the base class itself, not left for callers to guess
    assert (PlainTask.evaluations, PlainTask.headline_metrics, PlainTask.embeds) == ((), ("test/loss",), False)
    task = PlainTask(LENET)
    assert task.headline_metrics == ("test/loss",) and task.embeds is False and task.reconstructs is False


def test_each_labkit_task_declares_its_capabilities():
    classes = labkit_task_classes()
    names = {c.__name__ for c in classes}
    assert {"ClassificationTask", "MetricTask", "SiameseTask", "TripletTask", "AutoencoderTask",
            "DenoisingAutoencoderTask", "SparseAutoencoderTask"} <= names
    assert ClassificationTask.evaluations == ("classification",)
    assert SiameseTask.evaluations == TripletTask.evaluations == ("retrieval",)
    for cls in (AutoencoderTask, DenoisingAutoencoderTask, SparseAutoencoderTask):
        assert cls.evaluations == ("representation", "compression", "anomaly")
        assert cls.reconstructs is True and cls.embeds is False
    assert SiameseTask.embeds is TripletTask.embeds is True
    assert not SiameseTask.reconstructs and not ClassificationTask.embeds and not ClassificationTask.reconstructs
    for cls in classes:
        assert isinstance(cls.embeds, bool) and isinstance(cls.reconstructs, bool), cls
        assert not (cls.embeds and cls.reconstructs), cls
        assert cls.embeds == (cls.embed is not LabTask.embed), cls  # embeds <=> a task's own embed(x)


def test_every_task_lists_registered_reports_and_headlines_it_can_show():
    from labkit.run.validate import RUN_METRICS  # metrics.json keys besides the logged metrics (test/error)

    registered = report_headlines()
    for cls in labkit_task_classes():
        assert cls.evaluations and isinstance(cls.evaluations, tuple), cls
        assert set(cls.evaluations) <= set(registered), (cls, cls.evaluations)
        assert cls.headline_metrics and isinstance(cls.headline_metrics, tuple), cls
        for key in cls.headline_metrics:
            if key in cls.logged_metrics or key in RUN_METRICS:
                continue
            report, _, name = key.partition("/")
            assert report in cls.evaluations, f"{cls.__name__}: {key} names a report the task does not run"
            assert name in registered[report], f"{cls.__name__}: {key} is not a headline the report declares"


def test_reports_declare_their_headlines_at_registration():
    heads = report_headlines()
    assert heads["classification"] == ("accuracy",)
    assert heads["retrieval"] == ("precision_at_1", "map_at_r")
    assert heads["representation"] == ("knn_accuracy_codes", "fewshot_accuracy_codes_mean")
    assert heads["compression"] == ("compression_ratio_float32",)
    assert heads["anomaly"] == ("auroc",)
    assert heads["localization"] == ("position_error_median_m", "orientation_error_median_deg")
    assert set(heads) == set(REPORTS) and list(heads) == sorted(heads)
    with pytest.raises(TypeError, match="headlines is a tuple of keys"):
        register("never_registered", headlines="accuracy")
    assert "never_registered" not in REPORTS


# ----- embedding and reconstruction ------------------------------------------------------------------------------
def test_embed_on_a_task_that_does_not_embed_is_refused_by_name():
    x = torch.zeros(2, 1, 28, 28)
    for task in (ClassificationTask(LENET), AutoencoderTask(CONV_AE), PlainTask(LENET)):
        with pytest.raises(IncompatibleError, match=f"task {type(task).__name__} does not train an embedding"):
            task.embed(x)
    siamese = SiameseTask(EMBEDDING_NET).eval()
    with torch.no_grad():
        assert torch.equal(siamese.embed(x), siamese.model(x).flatten(1)) and siamese.embed(x).shape == (2, 16)


def test_encode_and_decode_delegate_to_the_network_where_declared():
    x = torch.randn(2, 1, 28, 28)
    ae = AutoencoderTask(CONV_AE).eval()
    with torch.no_grad():
        code = ae.encode(x)
        assert ae.encodes and torch.equal(code, ae.model.encode(x))
        assert torch.equal(ae.decode(code), ae.model.decode(code))
    # a classifier on an autoencoder's encoder has codes (the representation report applies) but no decoder
    clf = ClassificationTask(ENCODER_CLASSIFIER).eval()
    assert clf.encodes and not clf.reconstructs
    with torch.no_grad():
        assert torch.equal(clf.encode(x), clf.model.encode(x))
    with pytest.raises(IncompatibleError, match="task ClassificationTask does not train an autoencoder"):
        clf.decode(code)
    lenet = ClassificationTask(LENET)
    assert not lenet.encodes
    with pytest.raises(IncompatibleError, match="task ClassificationTask has no code to give: its network LeNet"):
        lenet.encode(x)


def test_callers_ask_the_task_not_its_network(tmp_path):
    from labkit.cli.predict import _kind
    from labkit.evaluation.anomaly import anomaly_report
    from labkit.evaluation.representation import encoder_of
    from labkit.evaluation.retrieval import embedding_fn

    assert _kind(SiameseTask(EMBEDDING_NET)) == "embedding"
    assert _kind(AutoencoderTask(CONV_AE)) == "autoencoder"
    assert _kind(ClassificationTask(LENET)) == _kind(ClassificationTask(ENCODER_CLASSIFIER)) == "classification"
    # what the task declares decides, not what its network happens to have
    assert _kind(PlainTask(CONV_AE)) == "classification" and _kind(ReconstructingTask(CONV_AE)) == "autoencoder"

    fn, desc = embedding_fn(SiameseTask(EMBEDDING_NET))
    assert desc.startswith("SiameseTask.embed")
    fn, desc = embedding_fn(ClassificationTask(LENET))
    assert desc.startswith("penultimate features of LeNet")

    clf = ClassificationTask(ENCODER_CLASSIFIER)
    assert encoder_of(clf, "representation") == clf.encode  # EncoderClassifier.encode, as before
    with pytest.raises(IncompatibleError, match="report 'representation' needs a model with encode"):
        encoder_of(ClassificationTask(LENET), "representation")
    cfg = OmegaConf.create({"split": "test"})
    with pytest.raises(IncompatibleError, match="report 'anomaly' needs an autoencoder.*ClassificationTask"):
        anomaly_report(clf, None, cfg, tmp_path)


# ----- evaluate.py runs what the task declares -------------------------------------------------------------------
def _fake_run(monkeypatch, tmp_path, task):
    import labkit.cli.evaluate as ev

    monkeypatch.setattr(ev.runs, "resolve_run", lambda run, *a, **k: (tmp_path, None))
    monkeypatch.setattr(ev, "load_run", lambda *a, **k: (None, task, None, tmp_path / "last.ckpt"))
    return ev.evaluate


def test_evaluate_runs_the_reports_the_task_declares(probe_report, monkeypatch, tmp_path):
    evaluate = _fake_run(monkeypatch, tmp_path, ProbeTask(LENET))
    results = evaluate(OmegaConf.create({"run": str(tmp_path), "split": "test"}))
    assert probe_report == ["ProbeTask"] and results[PROBE] == {"score": 0.25, "other": 0.5}
    assert json.loads((tmp_path / "evaluation" / "test" / "report.json").read_text())[PROBE]["score"] == 0.25


def test_evaluate_asks_for_reports_when_the_task_declares_none(probe_report, monkeypatch, tmp_path):
    evaluate = _fake_run(monkeypatch, tmp_path, PlainTask(LENET))
    with pytest.raises(ConfigError, match=r"task PlainTask declares no evaluation reports.*reports=\[\.\.\.\]"):
        evaluate(OmegaConf.create({"run": str(tmp_path), "split": "test"}))
    assert probe_report == [] and not (tmp_path / "evaluation").exists()
    evaluate(OmegaConf.create({"run": str(tmp_path), "split": "test", "reports": [PROBE]}))
    assert probe_report == ["PlainTask"]


# ----- tables read the declarations --------------------------------------------------------------------------------
def test_compare_columns_come_from_the_report_registry(probe_report, tmp_path):
    import labkit.tracking.summary as summary
    from labkit.tracking.compare import build_table

    assert not hasattr(summary, "REPORT_HEADLINES")  # one registry: labkit.evaluation's
    assert summary.report_headlines()[PROBE] == ("score",)
    run = write_job(tmp_path / "sweep", 0, ["model=lenet"], {"status": "ok", "test/acc": 0.5, "test/error": 50.0})
    (run / "evaluation" / "test").mkdir(parents=True)
    (run / "evaluation" / "test" / "report.json").write_text(json.dumps({PROBE: {"score": 0.25, "other": 0.5}}))
    table = build_table([(run, "r0")])
    assert f"{PROBE}/score" in table["columns"] and f"{PROBE}/other" not in table["columns"]
    assert table["rows"][0][f"{PROBE}/score"] == 0.25


def test_summary_headlines_are_the_tasks_declarations(probe_report, tmp_path):
    from labkit.tracking.summary import build_summary, headline_keys, monitor_of

    assert headline_keys("labkit.tasks.ClassificationTask") == ("test/acc", "test/error")
    assert headline_keys("labkit.tasks.SiameseTask") == SiameseTask.headline_metrics
    assert headline_keys(f"{__name__}.PlainTask") == ("test/loss",)  # LabTask's default
    assert headline_keys("gone.module.SomeTask") == ("test/loss",) and monitor_of("") == ("val/loss", "min")
    assert monitor_of("labkit.tasks.ClassificationTask") == ("val/acc", "max")

    sweep = tmp_path / "sweep"
    for job in (0, 1):
        run = write_job(sweep, job, [f"task.optimizer.lr={job + 1}"], {"status": "ok", "test/loss": 1.0 + job},
                        target=f"{__name__}.ProbeTask")
        (run / "evaluation" / "test").mkdir(parents=True)
        (run / "evaluation" / "test" / "report.json").write_text(json.dumps({PROBE: {"score": 0.25 * (job + 1)}}))
    summary = build_summary(sweep)
    # the swept key first, then the task's headlines (its own and its report's); constant columns are said once
    assert summary["columns"][:4] == ["job", "task.optimizer.lr", "test/loss", f"{PROBE}/score"]
    assert [r[f"{PROBE}/score"] for r in summary["rows"]] == [0.25, 0.5]


def test_importing_the_summary_and_the_registry_stays_light():
    code = ("import sys, labkit.tracking.summary, labkit.evaluation\n"
            "heavy = [m for m in sys.modules if m == 'torch' or m.startswith(('labkit.evaluation.', 'labkit.tasks'))]\n"
            "assert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


# ----- nobody probes -------------------------------------------------------------------------------------------------
FORBIDDEN = ("getattr(task", 'getattr(cls, "headline_metrics"', "getattr(task_class", "REPORT_HEADLINES")


def test_no_module_probes_a_task_for_what_it_declares():
    offenders = []
    for path in sorted((ROOT / "labkit").rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            offenders += [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for p in FORBIDDEN if p in line]
    assert not offenders, "\n".join(offenders)


def test_the_declarations_are_class_attributes_callers_can_read_without_an_instance():
    # summaries and config checks read them from the class: none may be set only in __init__
    for cls in labkit_task_classes():
        for name in ("evaluations", "headline_metrics", "embeds", "reconstructs", "monitor", "logged_metrics"):
            assert not isinstance(inspect.getattr_static(cls, name), property), (cls, name)
