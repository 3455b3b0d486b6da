"""Each broad ``except`` (``Exception``, ``BaseException``, a bare ``except:``) in labkit either raises again (what it
caught, after a clean-up, or labkit's own error naming it) or says on its own line why it must be broad: a fallback
that swallows an error is a decision a reader should see."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

BROAD = {"Exception", "BaseException"}


def _broad(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return handler.type is None or any(isinstance(k, ast.Name) and k.id in BROAD for k in kinds)


def _reraises(handler: ast.ExceptHandler) -> bool:
    """Ends by raising: what it caught, or an error of labkit's that names it (nothing is swallowed)."""
    return isinstance(handler.body[-1], ast.Raise)


def unexplained(root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted([*(root / "labkit").rglob("*.py"), *(root / "hydra_plugins").rglob("*.py")]):
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ExceptHandler) and _broad(node) and not _reraises(node):
                if "#" not in lines[node.lineno - 1]:
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return found


def test_every_broad_except_reraises_or_says_why():
    assert unexplained() == []


def test_the_scan_finds_a_silent_fallback(tmp_path):
    (tmp_path / "labkit").mkdir()
    (tmp_path / "hydra_plugins").mkdir()
    (tmp_path / "labkit" / "m.py").write_text(
        "try:\n    x = 1\nexcept Exception:\n    x = 0\n"  # silent: found
        "try:\n    x = 1\nexcept Exception:  # a reason\n    x = 0\n"  # explained
        "try:\n    x = 1\nexcept BaseException:\n    x = 0\n    raise\n"  # clean-up, re-raised
        "try:\n    x = 1\nexcept ValueError:\n    x = 0\n")  # narrow
    assert unexplained(tmp_path) == ["labkit/m.py:3: except Exception:"]
