#!/usr/bin/env python
"""Predict on your own images: ``python predict.py run=logs/runs/<run dir> inputs=<files, folder or glob>``.

Uses the run's own config and checkpoint (its evaluation transforms and normalization) and writes predictions.csv
and a PNG grid to ``<run>/predictions/<timestamp>``.
A bad value or file prints one paragraph (``error: ...``) and exits 1; ``--debug`` shows the full traceback.
"""
from labkit.cli.app import run


def main(cfg) -> None:
    from labkit.cli.predict import predict

    predict(cfg)


def cli(argv=None):
    """The command line (``argv``: the arguments, default ``sys.argv[1:]``)."""
    from labkit.cli.inputs import check

    return run("predict", main, check, help=True, argv=argv)


if __name__ == "__main__":
    cli()
