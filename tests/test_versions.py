"""Version bounds: each direct dependency's lower bound in pyproject.toml is the version constraints/minimum.txt pins
(CI's second venv runs the fast tier on exactly those), and each has an upper bound; CI runs both tiers."""
from __future__ import annotations

import re

from conftest import ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own TOML reader
    import tomli as tomllib

SPEC = re.compile(r"^([A-Za-z0-9_.-]+)>=([0-9][^,]*),<([0-9][^,]*)$")


def _declared() -> dict[str, tuple[str, str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found: dict[str, tuple[str, str]] = {}
    for group, reqs in [("dependencies", project["dependencies"]), *project["optional-dependencies"].items()]:
        for req in reqs:
            name = re.split(r"[<>=!~ \[]", req, maxsplit=1)[0].lower()
            if group in ("dashboard", "test") and req == name:
                continue  # tools without bounds: pytest, ruff, import-linter, optuna-dashboard
            m = SPEC.match(req)
            assert m, f"{group}: {req!r} needs a lower and an upper bound, as 'pkg>=low,<high'"
            assert found.setdefault(name, m.group(2, 3)) == m.group(2, 3), f"{name}: two different bounds"
    return found


def _minimums() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints" / "minimum.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints/minimum.txt: {line!r} is not 'pkg==version'"
            pins[name.lower()] = version
    return pins


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def test_every_lower_bound_is_the_pinned_minimum_and_below_its_upper_bound():
    declared, pins = _declared(), _minimums()
    assert {"torch", "torchvision", "pytorch-lightning", "hydra-core", "omegaconf", "optuna", "mlflow"} <= set(declared)
    assert set(declared) == set(pins), set(declared) ^ set(pins)
    for name, (low, high) in declared.items():
        assert pins[name] == low, f"{name}: pyproject says >={low}, constraints/minimum.txt pins {pins[name]}"
        assert _key(low) < _key(high), name
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"  # what this machine can install


def test_ci_runs_the_full_suite_and_the_fast_tier_at_the_minimums():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert 'pip install -e ".[test]" && python -m pytest' in ci
    assert 'pip install -c constraints/minimum.txt -e ".[test]"' in ci
    assert ci.index('pip install -c constraints/minimum.txt -e ".[test]"') < ci.index('python -m pytest -m "not slow"')
    markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("slow:") for m in markers)
