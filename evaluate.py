#!/usr/bin/env python
"""Evaluate a finished run: ``python evaluate.py run=logs/runs/<run dir> [split=val] [ckpt=last]``.

Reloads the run's own config.yaml and checkpoint and writes reports (JSON, PNG) to ``<run>/evaluation/<split>``.
A bad value or file prints one paragraph (``error: ...``) and exits 1; ``--debug`` shows the full traceback.
"""
from labkit.cli.evaluate import cli

if __name__ == "__main__":
    cli()
