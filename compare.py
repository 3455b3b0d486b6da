#!/usr/bin/env python
"""Compare runs side by side: ``python compare.py logs/runs/<run> logs/multirun/<sweep> 'logs/runs/2026-11-*'``.

Prints and writes a table (comparison.md, comparison.csv) of the runs' differing settings and metrics and a PNG of
their validation curves to ``--out`` or ``<log dir>/compare/<timestamp>/``; sweep folders also get their summary
(summary.md/csv/png) rebuilt, e.g. after a killed sweep.
"""
import sys

from labkit.tracking.compare import main

if __name__ == "__main__":
    sys.exit(main())
