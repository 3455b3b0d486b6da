#!/usr/bin/env python
"""Evaluate a finished run: ``python evaluate.py run=logs/runs/<run dir> [split=val] [ckpt=last]``.

Reloads the run's own config.yaml and checkpoint and writes reports (JSON, PNG) to ``<run>/evaluation/<split>``.
A bad value or file prints one paragraph (``error: ...``) and exits 1; ``--debug`` shows the full traceback.
"""
from labkit.cli.app import run


def main(cfg) -> None:
    from labkit.cli.evaluate import evaluate

    evaluate(cfg)


def cli(argv=None):
    """The command line (``argv``: the arguments, default ``sys.argv[1:]``)."""
    from labkit.run.validate import check_evaluate

    return run("evaluate", main, check_evaluate, help=True, argv=argv)


if __name__ == "__main__":
    cli()
