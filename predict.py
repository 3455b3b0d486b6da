#!/usr/bin/env python
"""Predict on your own images: ``python predict.py run=logs/runs/<run dir> inputs=<files, folder or glob>``.

Uses the run's own config and checkpoint (its evaluation transforms and normalization) and writes predictions.csv
and a PNG grid to ``<run>/predictions/<timestamp>``.
"""
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

import labkit.quiet  # noqa: F401  (dependency console noise filtered before the imports below)
from labkit import runs  # noqa: F401
from labkit.errors import LabkitError
from labkit.predict import predict

USAGE = ("usage: python predict.py run=<run dir or .ckpt> inputs=<image file, folder or quoted glob> [topk=3] "
         "[ckpt=best|last]\n  e.g. python predict.py run=logs/runs/<run> 'inputs=my_digits/*.png'\n"
         "  python predict.py --help lists every option")


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    missing = [k for k in ("run", "inputs") if OmegaConf.is_missing(cfg, k)]
    if missing:
        sys.exit(f"error: {' and '.join(f'{k}=' for k in missing)} not given.\n{USAGE}")
    try:
        predict(cfg)
    except (LabkitError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
