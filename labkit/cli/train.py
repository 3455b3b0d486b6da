"""``python train.py ...``: the Hydra job (``main``) and the command line (``cli``)."""
import logging

from labkit.cli.app import run
from labkit.core import layout

log = logging.getLogger("labkit")


def main(cfg) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from labkit.run.lifecycle import record_failure, train

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        metrics = train(cfg)
    except Exception as e:
        record_failure(cfg, e)
        if multirun:  # the other jobs go on; the sweep summary reports this one and the exit status is 1
            log.error("job failed: %s: %s", type(e).__name__, e)
            return float("nan") if cfg.get("optimized_metric") else None
        raise  # labkit.cli.app prints one paragraph for an error the user can fix, a traceback for a bug
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
    from labkit.run.validate import check_train

    return run("train", main, check_train, config_dir=layout.CONF_DIR, argv=argv)
