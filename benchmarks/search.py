"""Wall time of an Optuna search with 2 workers vs 1: ``python benchmarks/search.py [--trials 8] [--epochs 20]``.

Both searches run the same trials: ``hparams_search=optuna`` on the digits (conf/hparams_search/optuna.yaml's search
space, TPE seeded per trial number, so trial N has the same parameters whoever runs it), ``pruner=none`` (every
trial trains all its epochs), no logger, no progress bar, each search in a fresh folder with its own journal file.

- 1 worker: one ``python train.py hparams_search=optuna ...`` (Hydra's basic launcher: one trial after the other);
- 2 workers, ``--workers processes`` (default): the same command started twice at once on one study, the recipe
  for several processes or cluster jobs (README, Sweeps); ``--workers joblib``: one command with
  ``hydra/launcher=joblib hydra.launcher.n_jobs=2`` (its worker processes start once, in the first batch).

Wall time runs from the start of the command(s) to the end of the last one: Python and torch start-up, the trials,
the summaries and plots. Each process gets ``--threads`` intra-op threads (default 1, so 2 workers use the 2 cores
and 1 worker one: set ``--threads 2`` to give the single worker both). ``--repeat`` alternates the two modes and
reports each ratio and their median. Prints the times, the check that the study holds ``--trials`` complete trials,
the ratio (1 worker / 2 workers), and where the time goes (from each worker's log): start-up (Python, torch, the
config, opening the study) and wrap-up (summary, plots) are paid once per command whatever the number of trials,
so the ratio of the trials alone says how well the workers share the machine.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def command(storage: Path, args: argparse.Namespace, extra: list[str]) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), "hparams_search=optuna", f"hydra.sweeper.n_trials={args.trials}",
            f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=bench", "hydra.sweeper.pruner=none",
            f"trainer.max_epochs={args.epochs}", "logger=none", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", *extra]


STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def phases(log: Path, start: float, end: float) -> dict[str, float]:
    """A worker's start-up (command start to its first launched trial), trials (to its last trial told back) and
    wrap-up (summary, plots, exit), from its log's time stamps."""
    stamps = {"first": None, "last": None}
    for line in log.read_text().splitlines():
        m = STAMP.match(line)
        if not m:
            continue
        t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if "Launching" in line and stamps["first"] is None:
            stamps["first"] = t
        if re.search(r"\): (complete|pruned|failed)", line):
            stamps["last"] = t
    first, last = stamps["first"] or start, stamps["last"] or end
    return {"startup_s": first - start, "trials_s": last - first, "wrapup_s": end - last}


def busy_cpu_s() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (Linux ``/proc/stat``), None elsewhere."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def search(workers: int, args: argparse.Namespace, folder: Path) -> tuple[float, list[dict]]:
    """Seconds for one search with ``workers`` workers and each worker's phases; checks that its study has
    ``args.trials`` complete trials."""
    folder.mkdir(parents=True)
    storage = folder / "study.log"
    env = dict(os.environ, LABKIT_LOG_DIR=str(folder / "logs"), PYTHONPATH=str(ROOT),
               OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    if workers == 1:
        commands = [command(storage, args, [])]
    elif args.workers == "joblib":
        commands = [command(storage, args, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])]
    else:
        commands = [command(storage, args, []) for _ in range(workers)]
    logs = [open(folder / f"worker{i}.log", "w") for i in range(len(commands))]
    busy0, ours0 = busy_cpu_s(), children_cpu_s()
    start, wall = time.perf_counter(), time.time()
    procs = [subprocess.Popen(c, cwd=folder, env=env, stdout=f, stderr=subprocess.STDOUT) for c, f in zip(commands, logs)]
    codes, ends = [], []
    for p in procs:
        codes.append(p.wait())
        ends.append(time.time())
    seconds = time.perf_counter() - start
    busy1, ours1 = busy_cpu_s(), children_cpu_s()
    # cores the machine's other processes kept busy meanwhile (other users on a shared machine)
    others = None if busy0 is None else max(0.0, (busy1 - busy0) - (ours1 - ours0)) / seconds
    for f in logs:
        f.close()
    if any(codes):
        raise SystemExit(f"a search failed (exit {codes}): see {folder}/worker*.log\n"
                         + (folder / "worker0.log").read_text()[-3000:])
    import optuna

    from labkit.tracking.search import open_storage

    study = optuna.load_study(study_name="bench", storage=open_storage(str(storage)))
    complete = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) != args.trials or len({t.number for t in complete}) != args.trials:
        raise SystemExit(f"expected {args.trials} complete trials in {storage}, found {len(complete)}")
    found = [phases(folder / f"worker{i}.log", wall, end) for i, end in enumerate(ends)]
    return seconds, [{**p, "other_processes_cores": others} for p in found]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20, help="epochs per trial (the digits: ~0.1 s each)")
    parser.add_argument("--workers", choices=("processes", "joblib"), default="processes")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of each process")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the searches' folders (printed)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="labkit-search-bench-"))
    ratios, times = [], []
    for i in range(args.repeat):
        one, one_phases = search(1, args, root / f"{i}-one")
        two, two_phases = search(2, args, root / f"{i}-two")
        ratios.append(one / two)
        trials_ratio = one_phases[0]["trials_s"] / max(p["trials_s"] for p in two_phases)
        times.append({"one_worker_s": round(one, 2), "two_workers_s": round(two, 2), "ratio": round(one / two, 3),
                      "trials_phase_ratio": round(trials_ratio, 3),
                      "phases": {"one": [{k: v if v is None else round(v, 2) for k, v in p.items()} for p in one_phases],
                                 "two": [{k: v if v is None else round(v, 2) for k, v in p.items()} for p in two_phases]}})
        others = [p[0]["other_processes_cores"] for p in (one_phases, two_phases)]
        busy = (f"; other processes kept {others[0]:.2f} and {others[1]:.2f} cores busy meanwhile"
                if None not in others else "")
        print(f"run {i}: 1 worker {one:.1f} s, 2 workers ({args.workers}) {two:.1f} s: {one / two:.2f}x (start-up "
              f"{one_phases[0]['startup_s']:.1f} s and wrap-up {one_phases[0]['wrapup_s']:.1f} s per command; the "
              f"trials alone: {trials_ratio:.2f}x{busy})", flush=True)
    result = {"trials": args.trials, "epochs": args.epochs, "workers": args.workers, "threads": args.threads,
              "cpus": os.cpu_count(), "load_average": os.getloadavg(), "runs": times,
              "median_ratio": round(statistics.median(ratios), 3)}
    print(json.dumps(result))
    print(f"{args.trials} trials: 2 workers are {result['median_ratio']:.2f}x as fast as 1 "
          f"({'median of ' + str(args.repeat) + ' runs' if args.repeat > 1 else 'one run'})")
    if args.keep:
        print(f"searches kept in {root}")
    else:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
