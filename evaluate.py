#!/usr/bin/env python
"""Evaluate a finished run: ``python evaluate.py run=logs/runs/<run dir> [split=val] [ckpt=last]``.

Reloads the run's own config.yaml and checkpoint and writes reports (JSON, PNG) to ``<run>/evaluation/<split>``.
"""
import sys

import hydra
from omegaconf import DictConfig

from labkit import runs  # noqa: F401
from labkit.errors import LabkitError
from labkit.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except (LabkitError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
