#!/usr/bin/env python
"""Train a model: ``python train.py model=minialexnet_v4 data=cifar100 trainer.max_epochs=5``.

Sweep with ``-m``: ``python train.py -m model=lenet,lenet_v2 task.optimizer.lr=0.1,0.01``.
"""
import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from labkit import runs  # noqa: F401  (registers the run-directory resolvers)
from labkit.errors import LabkitError
from labkit.train import record_failure, train

log = logging.getLogger("labkit")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        metrics = train(cfg)
    except Exception as e:
        record_failure(cfg, e)
        if multirun:  # the other jobs go on; the sweep summary reports this one and the exit status is 1
            log.error("job failed: %s: %s", type(e).__name__, e)
            return float("nan") if cfg.get("optimized_metric") else None
        if isinstance(e, (LabkitError, FileNotFoundError, PermissionError)):
            log.error("%s", e)  # one clear paragraph, no stack trace
            sys.exit(1)
        raise
    for key in ("test/acc", "test/error", "test/loss"):
        if key in metrics:
            log.info("%s = %.4f", key, metrics[key])
    metric = cfg.get("optimized_metric")
    if metric:
        if metric not in metrics:
            raise KeyError(f"optimized_metric={metric!r} is not among this run's metrics: {sorted(metrics)}")
        return float(metrics[metric])
    return None


if __name__ == "__main__":
    main()
