#!/usr/bin/env python
"""How fast a bad command line is refused: ``python benchmarks/refusals.py [--repeat 3] [--root DIR]``.

Runs every pre-flight error case of ``tests/test_cli_errors.py`` (its ``IN_PROCESS`` and ``SUBPROCESS`` tables, the
cases that fail before Hydra creates anything: typos, impossible values, refused resume keys, missing mandatory
values, paths; not the ones refused when the data or its files' headers are read: the data module is built, with
torch) as a real ``python train.py ...`` / ``python evaluate.py
...`` process, ``--repeat`` times each, and prints the median and the maximum wall time of each case and over all
runs, and how many runs took 2 s or more (issue 20: every pre-flight error in under 2 s). Each run must still end
with exit status 1 and the case's phrase; a run that does not is reported and makes the exit status 1.

``--root DIR``: run the scripts of another checkout (e.g. ``git worktree add /tmp/base HEAD~1``) with the same cases,
to compare before and after. Not a test: timings depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the cases, their preparation and the checks are the tests' own

import test_cli_errors as cases  # noqa: E402

LIMIT_S = 2.0


def preflight_cases() -> list[cases.Case]:
    """The cases of the error table that the pre-flight refuses (nothing is written: no run directory)."""
    out = []
    for item in [*cases.IN_PROCESS, *cases.SUBPROCESS]:
        case = item.values[0] if hasattr(item, "values") else item  # a pytest.param
        if case.absent != cases.NO_CHECKPOINT and not case.reads_data:
            out.append(case)
    return out


def run_once(case: cases.Case, root: Path) -> tuple[float, str]:
    """(wall seconds, what went wrong or '') of one process."""
    with tempfile.TemporaryDirectory(prefix="labkit-refusal-") as tmp:
        tmp = Path(tmp)
        args = cases.prepare(case, tmp)
        env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
        env["PYTHONPATH"] = str(root)
        start = time.perf_counter()
        p = subprocess.run([sys.executable, f"{case.script}.py", *args], cwd=root, env=env, capture_output=True,
                           text=True, timeout=300)
        wall = time.perf_counter() - start
        try:
            cases.check(case, tmp, p.returncode, p.stdout + p.stderr)
            problem = ""
        except AssertionError:
            problem = f"exit {p.returncode}: {(p.stdout + p.stderr).strip()[-300:]}"
        return wall, problem


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="processes per case (default 3)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose train.py/evaluate.py run")
    parser.add_argument("--only", default="", help="only cases whose arguments contain this text")
    args = parser.parse_args(argv)
    todo = [c for c in preflight_cases() if args.only in " ".join(c.args)]
    print(f"{len(todo)} pre-flight refusals x {args.repeat} processes, scripts of {args.root.resolve()}\n")
    print(f"{'median s':>8} {'max s':>6}  case")
    walls: list[float] = []
    problems = []
    for case in todo:
        times = []
        for _ in range(args.repeat):
            wall, problem = run_once(case, args.root)
            times.append(wall)
            if problem:
                problems.append(f"{case.script}.py {' '.join(case.args)}: {problem}")
        walls += times
        slow = " <-- >= 2 s" if max(times) >= LIMIT_S else ""
        print(f"{statistics.median(times):8.2f} {max(times):6.2f}  {case.script}.py {' '.join(case.args)}{slow}",
              flush=True)
    slow_runs = sum(w >= LIMIT_S for w in walls)
    print(f"\noverall: median {statistics.median(walls):.2f} s, max {max(walls):.2f} s over {len(walls)} processes; "
          f"{slow_runs} took >= {LIMIT_S:g} s")
    for p in problems:
        print(f"NOT REFUSED AS EXPECTED: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
