#!/usr/bin/env python
"""Export a finished run: ``python export.py run=logs/runs/<run dir> format=onnx|torchscript|pt2``.

Writes the network with its normalization folded in (feed 0-1 pixels) to ``<run>/export/``, checks it against
PyTorch on the run's test images and prints how to load it.
"""
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

import labkit.quiet  # noqa: F401  (dependency console noise filtered before the imports below)
from labkit import runs  # noqa: F401
from labkit.errors import LabkitError
from labkit.export import export

USAGE = ("usage: python export.py run=<run dir or .ckpt> [format=onnx|torchscript|pt2]\n"
         "  e.g. python export.py run=logs/runs/<run> format=onnx\n  python export.py --help lists every option")


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg, "run"):
        sys.exit(f"error: run= not given.\n{USAGE}")
    try:
        export(cfg)
    except (LabkitError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
