"""``python train.py ...``: the command line (``cli``), its pre-flight (``plan``) and the Hydra job (``main``)."""
from __future__ import annotations

import logging

from labkit.cli.app import Finished, checked, run
from labkit.core import layout

log = logging.getLogger("labkit")


def plan(cfg, overrides):
    """The pre-flight of a single run: its plan, made once (nothing written); a finished run resumed without a larger
    limit is :class:`Finished`, and Hydra never starts."""
    from labkit.run import directory
    from labkit.run import plan as planning

    made = planning.make(cfg, overrides)
    # hydra.run.dir takes the resumed run's folder from the plan instead of resolving resume= a second time
    directory.planned_run_dir = made.resume.run_dir if made.resume is not None else None
    return Finished(made.nothing_to_do) if made.nothing_to_do else made


def main(cfg) -> float | None:
    """One job: the pre-flight's plan at the directory Hydra made (a sweep job, which had no pre-flight, makes its
    own); failures are recorded by :func:`labkit.run.lifecycle.execute`."""
    from labkit.core import console

    with console.settings():  # again: a sweep's job may run in a worker process that cli() never ran in
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from labkit.run.lifecycle import prepare, train

        hydra = HydraConfig.get()
        multirun = hydra.mode == RunMode.MULTIRUN
        # a sweep job plans itself from its own config: the pre-flight's plan knows nothing of the overrides a sweeper
        # gives each job (hparams_search=optuna's parameters, its trial reporter)
        planned = checked()
        job = planned.at(hydra.runtime.output_dir) if planned is not None and not multirun else cfg
        try:
            single = not multirun  # a refused single run leaves no folder; a sweep job keeps its record
            with _device_set(cfg, hydra, multirun), _ddp_ready(cfg, hydra, multirun):
                metrics = train(prepare(job, list(hydra.overrides.task), discard_refused=single), discard_refused=single)
        except Exception as e:
            if multirun:  # the other jobs go on; the sweep summary reports this one (a failure makes the exit status 1)
                from labkit.core.errors import RunStopped

                if isinstance(e, RunStopped):  # stopped on purpose, e.g. pruned by the search: not a failure
                    log.info("job %s at epoch %s: %s", e.status, e.epoch, e)
                else:
                    log.error("job failed: %s: %s", type(e).__name__, e)
                return float("nan") if cfg.get("optimized_metric") else None
            raise  # labkit.cli.app prints one paragraph for an error the user can fix, a traceback for a bug
        for key in ("test/acc", "test/error", "test/loss"):
            if key in metrics:
                log.info("%s = %.4f", key, metrics[key])
        if metrics.get("reproduces"):  # reproduce=<run>: its figures beside the original's
            from pathlib import Path

            from labkit.tracking.reproduce import verdict

            result = verdict(Path(metrics["reproduces"]), Path(hydra.runtime.output_dir),
                             float(cfg.get("reproduce_tolerance") or 0.0))
            if result["verdict"] == "not reproduced" and not multirun:
                raise SystemExit(2)  # the check failed (the new run itself is complete)
        metric = cfg.get("optimized_metric")
        if metric:
            if metric not in metrics:
                raise KeyError(f"optimized_metric={metric!r} is not among this run's metrics: {sorted(metrics)}")
            return float(metrics[metric])
        return None


def _device_set(cfg, hydra, multirun: bool):
    """A sweep job that runs beside others on one machine trains on its own GPUs (:func:`labkit.run.devices.lease`)."""
    import contextlib

    if not multirun:
        return contextlib.nullcontext()
    from labkit.run import devices

    return devices.lease(cfg, hydra, int(hydra.job.num), hydra.sweep.dir)


def _ddp_ready(cfg, hydra, multirun: bool):
    """A sweep job's DDP ranks run this job, in this job's folder, on a rendezvous port of its own
    (:func:`labkit.run.rendezvous.sweep_job`)."""
    import contextlib

    if not multirun:
        return contextlib.nullcontext()
    from labkit.run import rendezvous

    return rendezvous.sweep_job(hydra, list(hydra.overrides.task), hydra.runtime.output_dir, hydra.sweep.dir,
                                cfg.get("trainer"))


def cli(argv=None):
    """The command line (``argv``: the arguments, default ``sys.argv[1:]``)."""
    return run("train", main, plan, config_dir=layout.CONF_DIR, argv=argv)
