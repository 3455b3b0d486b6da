#!/usr/bin/env python
"""Predict on your own images: ``python predict.py run=logs/runs/<run dir> inputs=<files, folder or glob>``.

Uses the run's own config and checkpoint (its evaluation transforms and normalization) and writes predictions.csv
and a PNG grid to ``<run>/predictions/<timestamp>``.
A bad value or file prints one paragraph (``error: ...``) and exits 1; ``--debug`` shows the full traceback.
"""
from labkit.cli.commands import predict as cli

if __name__ == "__main__":
    cli()
