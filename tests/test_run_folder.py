"""The run-folder API (labkit.run.directory) is the one owner of a run's own files: nothing else in labkit or its Hydra
plugins builds the path of config.yaml, metrics.json, resume_failed.json, provenance.json or the lock; metrics.json's
status is typed; one ``is_run_dir`` (and one each of flatten, finite, STUDY_FILE, UNFINISHED)."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from conftest import ROOT

from labkit.run import directory

OWNER = ROOT / "labkit" / "run" / "directory.py"
RUN_FILES = {"config.yaml", "metrics.json", "resume_failed.json", "provenance.json", "provenance.diff",
             ".config.trained.yaml", ".labkit.lock"}
RUN_FILE_NAMES = {"CONFIG_FILE", "METRICS_FILE", "RESUME_FAILED_FILE", "PROVENANCE_FILE", "DIFF_FILE", "TRAINED_CONFIG_FILE",
                  "LOCK_FILE"}
# core cannot import labkit.run (it is below it): its disk-full message only asks whether a folder looks like a run's
ALLOWED = {("labkit/core/files.py", "config.yaml")}


def _sources() -> list[Path]:
    return sorted([*(ROOT / "labkit").rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")])


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _in_fstring(tree: ast.AST) -> set[int]:
    """ids of the nodes inside f-strings (messages that name a file, not paths that are opened)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            inside.update(id(n) for n in ast.walk(node))
    return inside


def _direct_uses(path: Path, rel: str | None = None) -> list[str]:
    tree = ast.parse(path.read_text())
    rel = rel or path.relative_to(ROOT).as_posix()
    messages = _in_fstring(tree)
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value in RUN_FILES and id(node) not in docstrings \
                and (rel, node.value) not in ALLOWED:
            found.append(f"{rel}:{node.lineno}: the literal {node.value!r}")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and _name(node.right) in RUN_FILE_NAMES \
                and id(node) not in messages:
            found.append(f"{rel}:{node.lineno}: a path built with {_name(node.right)}")
        elif isinstance(node, ast.Call) and id(node) not in messages and \
                any(_name(a) in RUN_FILE_NAMES for a in node.args):
            named = next(_name(a) for a in node.args if _name(a) in RUN_FILE_NAMES)
            found.append(f"{rel}:{node.lineno}: {_name(node.func)}(..., {named})")
    return sorted(found, key=lambda hit: int(hit.split(":")[1]))


def test_only_the_run_folder_module_reaches_a_runs_files():
    """No module but labkit/run/directory.py names the path of a run's config.yaml (or its kept copy), metrics.json,
    resume_failed.json, provenance.json (or its diff) or lock (so none opens, reads or writes them: they ask it)."""
    offenders = [hit for path in _sources() if path != OWNER for hit in _direct_uses(path)]
    assert not offenders, "\n".join(offenders)
    assert _direct_uses(OWNER), "the scan finds nothing even in the owner: it looks at the wrong thing"


def test_the_scan_catches_a_direct_read(tmp_path):
    """The structural test above fails on the code it replaced (the sweeper's read of metrics.json, a path joined with
    the constant)."""
    sample = tmp_path / "sample.py"
    sample.write_text("from labkit.core.files import read_json\nfrom labkit.run import directory\n\n"
                      "def status(run_dir):\n    return read_json(run_dir / 'metrics.json').get('status')\n\n"
                      "def config(run_dir):\n    return (run_dir / directory.CONFIG_FILE).read_text()\n\n"
                      "def message(run_dir):\n    return f'{run_dir} has no {directory.METRICS_FILE}'\n")
    hits = _direct_uses(sample, "labkit/sample.py")
    assert len(hits) == 2 and "'metrics.json'" in hits[0] and "CONFIG_FILE" in hits[1], hits


@pytest.mark.parametrize("status", directory.STATUSES)
def test_a_metrics_record_round_trips_with_its_status(tmp_path, status):
    record = {"status": status, "seed": 3, "test/acc": 0.5, "stopped_at_epoch": 2, "best_checkpoint": "checkpoints/x.ckpt"}
    path = directory.write_metrics(tmp_path, record)
    assert path == tmp_path / "metrics.json"
    assert json.loads(path.read_text()) == record  # the file format is plain JSON, as before
    assert directory.read_metrics(tmp_path) == record
    assert directory.read_status(tmp_path) == status
    assert directory.has_metrics(tmp_path) and directory.has_record(tmp_path)


@pytest.mark.parametrize("status", ["running", "finished", "OK", None, 1])
def test_an_unknown_status_is_refused_clearly_and_nothing_is_written(tmp_path, status):
    with pytest.raises(ValueError) as e:
        directory.write_metrics(tmp_path, {"status": status, "test/acc": 0.5})
    text = str(e.value)
    assert repr(status) in text and "metrics.json" in text
    assert all(s in text for s in directory.STATUSES)  # it names the ones it accepts
    assert not (tmp_path / "metrics.json").exists()
    with pytest.raises(ValueError):
        directory.add_resume_failure(tmp_path, {"status": status})
    assert not (tmp_path / "resume_failed.json").exists()


def test_old_records_still_load(tmp_path):
    """A metrics.json written before the API (any status text, even one labkit no longer writes) reads back as it
    is: the type guards what labkit writes, never what an old run says."""
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "ok", "test/acc": 0.9}))
    assert directory.read_status(tmp_path) == "ok" and directory.read_metrics(tmp_path)["test/acc"] == 0.9
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "weird"}))
    assert directory.read_status(tmp_path) == "weird"
    (tmp_path / "metrics.json").write_text("{broken")
    assert directory.read_metrics(tmp_path) == {} and directory.read_status(tmp_path) is None
    with pytest.raises(ValueError):
        directory.read_status(tmp_path, strict=True)


def test_resume_failures_and_provenance_round_trip(tmp_path):
    assert directory.read_resume_failures(tmp_path) == [] and directory.read_provenance(tmp_path) == {}
    directory.add_resume_failure(tmp_path, {"status": "failed", "error": "A"})
    directory.add_resume_failure(tmp_path, {"status": "preempted", "stopped_at_epoch": 4})
    assert [a["status"] for a in directory.read_resume_failures(tmp_path)] == ["failed", "preempted"]
    assert json.loads((tmp_path / "resume_failed.json").read_text())["attempts"][0]["error"] == "A"  # same format
    directory.write_provenance(tmp_path, {"sessions": [{"started": "2024-01-02 03:04:05"}]})
    assert directory.read_provenance(tmp_path)["sessions"][0]["started"] == "2024-01-02 03:04:05"
    (tmp_path / "provenance.json").write_text("[not json")
    assert directory.read_provenance(tmp_path) == {}  # a damaged record never stops a run


def test_every_status_a_stopped_run_records_is_a_known_one():
    """Each RunStopped (pruned, preempted, interrupted...) records its ``status`` through write_metrics: all are typed."""
    import labkit.callbacks  # noqa: F401  (defines the preemption and interruption stops)
    import labkit.callbacks.search  # noqa: F401  (defines the pruner's stop)
    from labkit.core.errors import RunStopped

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    found = {RunStopped.status, *(c.status for c in subclasses(RunStopped) if c.__module__.startswith("labkit."))}
    assert {"stopped", "pruned", "preempted", "interrupted"} <= found
    assert found <= set(directory.STATUSES)
    assert set(directory.UNFINISHED) - {None} <= set(directory.STATUSES)


def test_a_users_stop_with_a_status_of_its_own_is_recorded_as_stopped_naming_it(tmp_path):
    """A RunStopped subclass outside labkit may name a status write_metrics does not know: its run still gets its
    record (status stopped, the subclass's own word beside it) instead of losing it to the refusal."""
    from labkit.core.errors import RunStopped
    from labkit.run import records

    class Cancelled(RunStopped):
        status = "cancelled"

    entry = records._entry(Cancelled("the user's own stop", epoch=2), [])
    directory.write_metrics(tmp_path, entry)
    saved = directory.read_metrics(tmp_path)
    assert saved["status"] == "stopped" and saved["stopped_as"] == "cancelled" and saved["stopped_at_epoch"] == 2


def _definitions() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.setdefault(node.name, []).append(rel)
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        found.setdefault(t.id, []).append(rel)
    return found


def test_one_is_run_dir_and_one_of_each_shared_helper():
    defs = _definitions()
    assert defs["is_run_dir"] == ["labkit/run/directory.py"]
    for name in ("CONFIG_FILE", "METRICS_FILE", "RESUME_FAILED_FILE", "PROVENANCE_FILE", "DIFF_FILE",
                 "TRAINED_CONFIG_FILE", "LOCK_FILE", "UNFINISHED"):
        assert defs[name] == ["labkit/run/directory.py"], name
    assert defs["STUDY_FILE"] == ["labkit/tracking/summary.py"]
    assert defs["flatten"] == ["labkit/core/values.py"] and "_flatten" not in defs
    assert defs["finite"] == ["labkit/core/values.py"] and "_finite" not in defs


def test_a_run_and_a_record_are_two_ideas(tmp_path):
    """is_run_dir: the folder holds a run (its config.yaml); has_record: a run, or a sweep job refused before it
    started (only metrics.json). The sweep summary lists both kinds of job."""
    from labkit.tracking.summary import sweep_jobs

    run, refused, empty = tmp_path / "0", tmp_path / "1", tmp_path / "2"
    for d in (run, refused, empty):
        d.mkdir()
    (run / "config.yaml").write_text("seed: 1\n")
    directory.write_metrics(refused, {"status": "failed", "refused": True, "error": "ConfigError: x"})
    assert directory.is_run_dir(run) and directory.has_record(run)
    assert not directory.is_run_dir(refused) and directory.has_record(refused)
    assert not directory.is_run_dir(empty) and not directory.has_record(empty)
    assert sweep_jobs(tmp_path) == [run, refused]


def test_flatten_keeps_each_callers_format():
    """The one flatten serves the tables of runs (dotted keys, lists as one cell) and the loggers' params (slashed keys,
    long values cut) exactly as their own copies did."""
    from labkit.core.values import flatten
    from labkit.tracking.summary import flat_config

    node = {"a": {"b": 1, "c": [1, 2.5]}, "d": "x" * 300, "e": {}}
    assert flat_config(node) == {"a.b": 1, "a.c": "[1,2.5]", "d": "x" * 300}
    from labkit.loggers.base import _param

    assert flatten({"config": node}, "/", _param) == {"config/a/b": 1, "config/a/c": "[1, 2.5]",
                                                       "config/d": "x" * 250}
