#!/usr/bin/env python
"""Export a finished run: ``python export.py run=logs/runs/<run dir> format=onnx|torchscript|pt2``.

Writes the network with its normalization folded in (feed 0-1 pixels) to ``<run>/export/``, checks it against
PyTorch on the run's test images and prints how to load it.
A bad value or file prints one paragraph (``error: ...``) and exits 1; ``--debug`` shows the full traceback.
"""
from labkit.cli.commands import export as cli

if __name__ == "__main__":
    cli()
