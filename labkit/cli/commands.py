"""The commands whose work needs torch from the first line (predict, export), behind entry points that are light
to import: ``python predict.py`` / ``python export.py`` in a checkout and ``labkit-predict`` / ``labkit-export``
after ``pip install`` call these, which import the module that does the work only when the job runs, so that a
refusal in the pre-flight (a glob that matches nothing, a value out of range) comes without importing torch."""
from __future__ import annotations

PREDICT_USAGE = """Predict on your own images: ``python predict.py run=logs/runs/<run dir> inputs=<files, folder or glob>``.

Uses the run's own config and checkpoint (its evaluation transforms and normalization) and writes predictions.csv
and a PNG grid to ``<run>/predictions/<timestamp>``.
A bad value or file prints one paragraph (``error: ...``) and exits 1; ``--debug`` shows the full traceback.
"""

EXPORT_USAGE = """Export a finished run: ``python export.py run=logs/runs/<run dir> format=onnx|torchscript|pt2``.

Writes the network with its normalization folded in (feed 0-1 pixels) to ``<run>/export/``, checks it against
PyTorch on the run's test images and prints how to load it.
A bad value or file prints one paragraph (``error: ...``) and exits 1; ``--debug`` shows the full traceback.
"""


def predict_job(cfg) -> None:
    """The Hydra job of ``python predict.py`` and ``labkit-predict``: :func:`labkit.cli.predict.predict`."""
    from labkit.cli.predict import predict

    predict(cfg)


def predict(argv=None):
    """``python predict.py`` / ``labkit-predict`` (``argv``: the arguments, default ``sys.argv[1:]``)."""
    from labkit.cli.app import run
    from labkit.cli.inputs import check
    from labkit.core.layout import CONF_DIR

    return run("predict", predict_job, check, help=True, doc=PREDICT_USAGE, config_dir=CONF_DIR, argv=argv)


def export_job(cfg) -> None:
    """The Hydra job of ``python export.py`` and ``labkit-export``: :func:`labkit.cli.export.export`."""
    from labkit.cli.export import export

    export(cfg)


def export(argv=None):
    """``python export.py`` / ``labkit-export`` (``argv``: the arguments, default ``sys.argv[1:]``)."""
    from labkit.cli.app import run
    from labkit.core.layout import CONF_DIR

    return run("export", export_job, help=True, doc=EXPORT_USAGE, config_dir=CONF_DIR, argv=argv)
