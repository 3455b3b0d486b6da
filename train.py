#!/usr/bin/env python
"""Train a model: ``python train.py model=minialexnet_v4 data=cifar100 trainer.max_epochs=5``.

Sweep with ``-m``: ``python train.py -m model=lenet,lenet_v2 task.optimizer.lr=0.1,0.01``.
A bad value or file prints one paragraph (``error: ...``) and exits 1; ``--debug`` shows the full traceback.
"""
import logging

from labkit.cli import run

log = logging.getLogger("labkit")


def main(cfg) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from labkit.train import record_failure, train

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        metrics = train(cfg)
    except Exception as e:
        record_failure(cfg, e)
        if multirun:  # the other jobs go on; the sweep summary reports this one and the exit status is 1
            log.error("job failed: %s: %s", type(e).__name__, e)
            return float("nan") if cfg.get("optimized_metric") else None
        raise  # labkit.cli prints one paragraph for an error the user can fix, a traceback for a bug
    for key in ("test/acc", "test/error", "test/loss"):
        if key in metrics:
            log.info("%s = %.4f", key, metrics[key])
    metric = cfg.get("optimized_metric")
    if metric:
        if metric not in metrics:
            raise KeyError(f"optimized_metric={metric!r} is not among this run's metrics: {sorted(metrics)}")
        return float(metrics[metric])
    return None


def cli(argv=None):
    """The command line (``argv``: the arguments, default ``sys.argv[1:]``)."""
    from labkit.config import check_train

    return run("train", main, check_train, argv=argv)


if __name__ == "__main__":
    cli()
