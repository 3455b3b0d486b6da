#!/usr/bin/env python
"""labkit speed benchmarks, side by side in one run: ``python benchmarks/run.py [--quick] [--only ...] [--device cuda]``.

Measures (issue 6, see BENCHMARKS.md):

a. training throughput (images/s over whole epochs after a warm-up epoch) of ``labkit.run.lifecycle.execute(cfg)`` vs the
   lab notes' hand-written loop vs the compute floor, for ``lenet_v2`` on MNIST-format data and
   ``minialexnet_v4`` on CIFAR-format data with the notes' augmentation (each variant in its own process,
   ``benchmarks/training.py``; floor and labkit alternate over several rounds, with up to 2 more when the
   floor's epochs disagree, and the best epoch counts, because other work on the machine can only slow an
   epoch down; the notes' loop runs in the first and the last round);
b. retrieval: one batched faiss search (``labkit.evaluation.embed.nearest``) vs the notes' per-query loop;
c. pair / triplet generation for 60,000 labels: ``labkit.data.sampling`` vs the notes' per-sample loops;
d. peak memory (max RSS) of the labkit training process vs the notes' loop (main process and DataLoader workers);
e. recipe: training throughput of ``experiment=minialexnet_v4_cifar10_fast`` as shipped (flip + random crop) vs the
   same preset with the batch-level regularizers switched on (``data.pad=2 data.erasing=0.5 task.mixup_alpha=0.2
   task.cutmix_alpha=1.0``) and with no augmentation at all (``data.augment=false``), alternating, best timed epoch
   of each.

Data are generated in their genuine file formats (IDX, CIFAR pickle batches) in a temporary folder.
Prints every figure with its target and PASS/FAIL; exits 1 when a target is missed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks import data as bdata  # noqa: E402

SECTIONS = ("lenet_v2", "minialexnet_v4", "retrieval", "sampling", "memory", "recipe")
FAST_PRESET = "minialexnet_v4_cifar10_fast"
REGULARIZERS_ON = ("data.pad=2", "data.erasing=0.5", "task.mixup_alpha=0.2", "task.cutmix_alpha=1.0")
UNAUGMENTED = ("data.augment=false",)
NOISE_SPREAD = 1.25  # floor epochs further apart than this: the load changed, add a round (--extra-rounds)
TARGETS = {  # name: minimum
    "lenet_v2 labkit / floor": 0.85,
    "lenet_v2 labkit / notes": 3.0,
    "minialexnet_v4 labkit / floor": 0.90,
    "recipe regularizers on / shipped": 0.90,
    "retrieval batched / per-query": 20.0,
    "pairs vectorized / notes": 100.0,
    "triplets vectorized / notes": 100.0,
}


# ----- machine ------------------------------------------------------------------------------------
def machine_info(device: str) -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    info = {"date": dt.datetime.now().isoformat(timespec="seconds"), "nproc": os.cpu_count(), "cpu": cpu,
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": device}
    try:
        import pytorch_lightning as pl

        info["lightning"] = pl.__version__
    except Exception:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    try:
        info["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    return info


# ----- a/d: training ------------------------------------------------------------------------------
def run_variant(variant: str, model: str, data_dir: Path, work: Path, epochs: int, batches: int, args,
                log, extra: tuple[str, ...] = ()) -> dict:
    out = work / f"{model}-{variant}-{time.monotonic_ns()}.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "training.py"), "--variant", variant, "--model", model,
           "--data-dir", str(data_dir), "--epochs", str(epochs), "--batches", str(batches),
           "--device", args.device, "--json", str(out), *extra]
    if variant != "notes":  # the notes' loop is fp32 eager NCHW, as written in the notes
        cmd += ["--precision", args.precision] + (["--compile"] if args.compile else [])
        if args.channels_last is not None:
            cmd += ["--channels-last", args.channels_last]
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    with open(work / "training.log", "a") as logf:
        logf.write(f"\n$ {' '.join(cmd)}\n")
        logf.flush()
        rc = subprocess.call(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
    if rc != 0:
        raise RuntimeError(f"{variant} {model} failed (exit {rc}); see {work / 'training.log'}")
    res = json.loads(out.read_text())
    timed = res["epochs"][1:] or res["epochs"]
    rates = [e["images"] / e["seconds"] for e in timed]
    log(f"  {model:15s} {variant:6s} {', '.join(f'{r:8.0f}' for r in rates)} images/s "
        f"(warm-up {res['epochs'][0]['images'] / res['epochs'][0]['seconds']:.0f}; "
        f"{time.perf_counter() - t0:.0f} s with start-up; max RSS {res['maxrss_mib']:.0f} MiB)")
    res["rates"] = rates
    return res


def _noisy(runs: dict, model: str) -> str | None:
    """Why the rounds so far cannot be trusted yet, or None: the floor's epochs disagree (the machine's load
    changed during the section), or labkit misses its floor target or beats it by far, which a slow period of
    one of the two also causes."""
    floor = [x for r in runs["floor"] for x in r["rates"]]
    lab = [x for r in runs["labkit"] for x in r["rates"]]
    if max(floor) > NOISE_SPREAD * min(floor):
        return f"the floor's epochs range from {min(floor):.0f} to {max(floor):.0f} images/s"
    if max(lab) < TARGETS[f"{model} labkit / floor"] * max(floor):
        return "labkit is below its floor target"
    if max(lab) > NOISE_SPREAD * max(floor):
        return "labkit is well above its floor, which must have run in a slow period"
    return None


def training(model: str, data_dir: Path, work: Path, args, log) -> dict:
    cfg = args.plan[model]
    runs: dict[str, list[dict]] = {"floor": [], "labkit": [], "notes": [], "floor_nchw": []}
    r = 0
    while True:
        pair = ("floor", "labkit") if r % 2 == 0 else ("labkit", "floor")
        runs[pair[0]].append(run_variant(pair[0], model, data_dir, work, cfg["epochs"], cfg["batches"], args, log))
        # the notes' loop in the first round and, when there are several, in the last planned one
        if not args.no_notes and (r == 0 or r == cfg["rounds"] - 1):
            runs["notes"].append(run_variant("notes", model, data_dir, work, cfg["notes_epochs"],
                                             cfg["notes_batches"], args, log))
        runs[pair[1]].append(run_variant(pair[1], model, data_dir, work, cfg["epochs"], cfg["batches"], args, log))
        r += 1
        if r < cfg["rounds"]:
            continue
        why = _noisy(runs, model)
        if why is None or r >= cfg["rounds"] + args.extra_rounds:
            if why:
                log(f"  ! still noisy after {r} rounds: {why}")
            break
        log(f"  ! {why}: one more round")
    if not args.quick and args.channels_last != "false":  # reference: the floor in the notes' NCHW layout
        runs["floor_nchw"].append(run_variant("floor_nchw", model, data_dir, work, cfg["epochs"], cfg["batches"],
                                              args, log))
    summary = {}
    for v, rs in runs.items():
        rates = [x for r in rs for x in r["rates"]]
        if not rates:
            continue
        summary[v] = {"best": max(rates), "median": statistics.median(rates), "epochs": len(rates),
                      "images_per_epoch": rs[0]["epochs"][-1]["images"],
                      "epoch_s_best": min(e["seconds"] for r in rs for e in r["epochs"][1:] or r["epochs"]),
                      "maxrss_mib": max(r["maxrss_mib"] for r in rs),
                      "workers_maxrss_mib": max(r["children_maxrss_mib"] for r in rs) if v == "notes" else None,
                      "tree_pss_mib": max((r.get("tree_pss_peak_mib") or 0.0) for r in rs) or None,
                      "gpu_util": [r.get("gpu_util") for r in rs if r.get("gpu_util")],
                      "cuda_max_allocated_mib": max((r.get("cuda_max_allocated_mib") or 0) for r in rs) or None}
    return summary


# ----- e: the fast preset's regularizers ----------------------------------------------------------
def recipe(data_dir: Path, work: Path, args, log) -> dict:
    """Images/s of the fast CIFAR-10 preset as shipped, with the batch-level regularizers on and unaugmented, in
    rounds whose order rotates."""
    p = args.plan["recipe"]
    changes = {"shipped": (), "regularizers on": REGULARIZERS_ON, "unaugmented": UNAUGMENTED}
    extra = {v: ("--experiment", FAST_PRESET, *(x for o in c for x in ("--override", o))) for v, c in changes.items()}
    names = list(extra)
    runs: dict[str, list[float]] = {v: [] for v in names}
    for r in range(p["rounds"]):
        for v in names[r % len(names):] + names[:r % len(names)]:
            res = run_variant("labkit", "minialexnet_v4", data_dir, work, p["epochs"], p["batches"], args, log,
                              extra=extra[v])
            runs[v] += res["rates"]
    return {v: {"best": max(x), "median": statistics.median(x), "epochs": len(x)} for v, x in runs.items()}


# ----- b: retrieval -------------------------------------------------------------------------------
def retrieval(args, log) -> dict:
    import faiss

    from labkit.evaluation.embed import nearest

    n_gallery, n_query, dim = 13_360, 6_171, 1_280
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((n_gallery, dim), dtype=np.float32)
    queries = rng.standard_normal((n_query, dim), dtype=np.float32)
    batched = []
    for _ in range(3):
        t0 = time.perf_counter()
        _, idx = nearest(gallery, queries, k=1)  # labkit: index build + one batched search
        batched.append(time.perf_counter() - t0)
    # the notes (002, predict_nn): build the index, then one search call per query
    loop_q = min(n_query, args.retrieval_queries or n_query)
    t0 = time.perf_counter()
    index = faiss.IndexFlatL2(gallery.shape[1])
    index.add(gallery.astype(np.float32))
    t1 = time.perf_counter()
    loop_idx = np.array([index.search(x.reshape(1, -1).astype(np.float32), k=1)[1][0][0] for x in queries[:loop_q]])
    loop_s = (t1 - t0) + (time.perf_counter() - t1) * n_query / loop_q  # the index is built once, the loop scaled
    agree = float((idx[:loop_q, 0] == loop_idx).mean())
    best = min(batched)
    log(f"  faiss 1-NN {n_query} x {n_gallery} x {dim}: batched {best:.3f} s (best of 3), per-query loop "
        f"{loop_s:.2f} s{f' (extrapolated from the first {loop_q} queries)' if loop_q < n_query else ''}; same neighbour for "
        f"{100 * agree:.2f}% of queries; faiss threads {faiss.omp_get_max_threads()}")
    return {"batched_s": best, "batched_all_s": batched, "loop_s": loop_s, "loop_queries": loop_q, "agree": agree}


# ----- c: pair / triplet generation ---------------------------------------------------------------
class NotesPairMNIST:
    """Notes 000/002, ``PairMNIST``: ``class_to_indices`` in ``__init__`` (once), then ``generate_pairs``, a
    Python-level draw per sample (``np.random.choice`` over the class's index array, or over the other classes)."""

    def __init__(self, targets):
        self.targets = targets  # torch int64 tensor, as torchvision's MNIST.targets
        self.class_to_indices = [np.where(self.targets == label)[0] for label in range(10)]

    def generate_pairs(self):
        self.pair_labels = (np.random.rand(len(self.targets)) > 0.5).astype(int)
        self.paired_idx = []
        for i, l in enumerate(self.pair_labels):
            c1 = self.targets[i].item()
            if l == 0:
                j = np.random.choice(self.class_to_indices[c1])
            else:
                diff_class = np.random.choice(list(set(range(10)) - {c1}))
                j = np.random.choice(self.class_to_indices[diff_class])
            self.paired_idx.append(j)


class NotesTripletMNIST(NotesPairMNIST):
    """Notes 000/002, ``TripletMNIST.generate_triplets``."""

    def generate_triplets(self):
        self.similar_idx = []
        self.dissimilar_idx = []
        for i in range(len(self.targets)):
            c1 = self.targets[i].item()
            j = np.random.choice(self.class_to_indices[c1])
            diff_class = np.random.choice(list(set(range(10)) - {c1}))
            k = np.random.choice(self.class_to_indices[diff_class])
            self.similar_idx.append(j)
            self.dissimilar_idx.append(k)


def _best(fn, repeats: int) -> list[float]:
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        fn(r)
        times.append(time.perf_counter() - t0)
    return times


def sampling(args, log) -> dict:
    """Per-epoch generation: labkit's ``draw`` (what TupleBatchSampler runs every epoch, the ClassSimilarity
    index being built once per split) vs the notes' ``generate_pairs`` / ``generate_triplets`` (their
    ``class_to_indices`` is built once in ``__init__``). The one-time index builds are reported too."""
    import torch

    from labkit.data.sampling import ClassSimilarity, draw

    targets = torch.randint(0, 10, (60_000,), generator=torch.Generator().manual_seed(0))
    y = targets.numpy()
    sim_build = _best(lambda r: ClassSimilarity(targets), 20)
    sim = ClassSimilarity(targets)
    np.random.seed(0)
    notes_build = _best(lambda r: NotesPairMNIST(targets), 3)
    notes = NotesTripletMNIST(targets)
    out = {"labkit_index_s": min(sim_build), "notes_index_s": min(notes_build)}
    for mode, notes_fn in (("pairs", notes.generate_pairs), ("triplets", notes.generate_triplets)):
        lab = _best(lambda r, mode=mode: draw(sim, mode, seed=0, epoch=r), 30)
        rows = draw(sim, mode, seed=0, epoch=0)
        if mode == "pairs":
            assert len(rows) == len(y) and np.array_equal(y[rows[:, 0]] == y[rows[:, 1]], rows[:, 2] == 0), \
                "labkit's pairs are wrong"
        else:
            assert len(rows) == len(y) and (y[rows[:, 0]] == y[rows[:, 1]]).all() \
                and (y[rows[:, 0]] != y[rows[:, 2]]).all() and (rows[:, 0] != rows[:, 1]).all(), \
                "labkit's triplets are wrong"
        nt = _best(lambda r, notes_fn=notes_fn: notes_fn(), 1 if args.quick else 2)
        out[mode] = {"labkit_s": min(lab), "labkit_median_s": statistics.median(lab), "notes_s": min(nt)}
        log(f"  {mode:8s} for 60,000 labels, per epoch: labkit draw {min(lab) * 1000:.2f} ms (best of 30, median "
            f"{statistics.median(lab) * 1000:.2f}), notes' loop {min(nt):.3f} s (best of {len(nt)})")
    log(f"  one-time index per split: labkit ClassSimilarity {out['labkit_index_s'] * 1000:.2f} ms, notes' "
        f"class_to_indices {out['notes_index_s'] * 1000:.2f} ms")
    return out


# ----- report -------------------------------------------------------------------------------------
def plan(args) -> dict:
    cuda = args.device.startswith("cuda")
    if args.quick:
        p = {"lenet_v2": dict(rounds=1, epochs=2, batches=0, notes_epochs=2, notes_batches=10),
             "minialexnet_v4": dict(rounds=1, epochs=2, batches=4 if not cuda else 0, notes_epochs=2,
                                    notes_batches=4 if not cuda else 0)}
    elif cuda:
        p = {"lenet_v2": dict(rounds=2, epochs=4, batches=0, notes_epochs=2, notes_batches=0),
             "minialexnet_v4": dict(rounds=2, epochs=4, batches=0, notes_epochs=2, notes_batches=0)}
    else:
        # CPU: a MiniAlexNetV4 epoch of 45,000 images takes minutes on 2 cores, so its epochs are cut to
        # --cifar-batches training batches (0 = whole epochs) to keep the run near 10 minutes
        p = {"lenet_v2": dict(rounds=3, epochs=4, batches=0, notes_epochs=3, notes_batches=0),
             "minialexnet_v4": dict(rounds=2, epochs=2, batches=args.cifar_batches, notes_epochs=2,
                                    notes_batches=args.cifar_batches)}
    # the fast preset trains on batches of 128: more of them per timed epoch than the notes' 1024
    p["recipe"] = dict(rounds=1 if args.quick else 2, epochs=2, batches=4 if args.quick else 8 * (args.cifar_batches or 8))
    if args.epochs:
        for v in p.values():
            v["epochs"] = args.epochs + 1
    if args.rounds:
        for v in p.values():
            v["rounds"] = args.rounds
    return p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--quick", action="store_true", help="a short sanity pass (few batches, indicative figures)")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections among {', '.join(SECTIONS)} (default: all)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]: floor, labkit (and the notes' loop) run there")
    ap.add_argument("--precision", default="32-true", help="labkit trainer.precision and the floor's autocast, "
                                                           "e.g. bf16-mixed on a GPU")
    ap.add_argument("--compile", action="store_true", help="task.compile=true for labkit, torch.compile for the floor")
    ap.add_argument("--channels-last", choices=("true", "false"), default=None,
                    help="data.channels_last for labkit and the floor's layout (default: labkit's default, "
                         "channels-last on the CPU only)")
    ap.add_argument("--cifar-batches", type=int, default=8,
                    help="CPU: training batches per minialexnet_v4 epoch (0 = whole epochs; default 8)")
    ap.add_argument("--retrieval-queries", type=int, default=None,
                    help="queries timed in the notes' per-query loop, extrapolated to 6,171 (0 = all; default "
                         "2000, 300 with --quick): every query scans the whole gallery, so the cost is linear")
    ap.add_argument("--sync-check", action="store_true",
                    help="GPU: one more labkit lenet_v2 run counting host syncs per training step")
    ap.add_argument("--epochs", type=int, default=0, help="timed epochs per run (after the warm-up epoch)")
    ap.add_argument("--rounds", type=int, default=0, help="alternating floor/labkit rounds per model")
    ap.add_argument("--no-notes", action="store_true", help="skip the notes' loop in the training section")
    ap.add_argument("--extra-rounds", type=int, default=None,
                    help="at most this many more floor/labkit rounds when the floor's epochs disagree by more than "
                         f"{NOISE_SPREAD:g}x or labkit misses its floor target (default 2, 1 with --quick)")
    ap.add_argument("--data-dir", default=None, help="reuse (or create) the generated data here instead of a temp dir")
    ap.add_argument("--json", default=None, help="also write every figure to this JSON file")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if "training" in only:
        only = [s for s in only if s != "training"] + ["lenet_v2", "minialexnet_v4"]
    bad = set(only) - set(SECTIONS)
    if bad:
        ap.error(f"unknown section(s) {sorted(bad)}: choose among {', '.join(SECTIONS)} (or training)")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            ap.error("--device cuda: no CUDA device is visible to torch")
    args.plan = plan(args)
    if args.extra_rounds is None:
        args.extra_rounds = 1 if args.quick else 2
    if args.retrieval_queries is None:
        args.retrieval_queries = 300 if args.quick else 2000

    def log(msg: str) -> None:
        print(msg, flush=True)

    info = machine_info(args.device)
    log(f"labkit benchmarks {info['date']}: {info['nproc']} CPUs ({info['cpu']}), torch {info['torch']} "
        f"({info['torch_threads']} threads), device {args.device}{' ' + info['gpu'] if 'gpu' in info else ''}, "
        f"precision {args.precision}{', compile' if args.compile else ''}{', QUICK' if args.quick else ''}; "
        f"load average {info.get('loadavg_start')}")
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="labkit-bench-"))
    data_dir = Path(args.data_dir) if args.data_dir else tmp / "data"
    results: dict = {"machine": info, "args": {k: v for k, v in vars(args).items() if k != "plan"},
                     "plan": args.plan}
    rows: list[tuple[str, str, str, str]] = []  # figure, value, target, verdict
    failed = []

    def check(name: str, value: float, detail: str = "") -> None:
        target = TARGETS[name]
        ok = value >= target
        if not ok:
            failed.append(name)
        rows.append((name, f"{value:.2f}x{detail}", f">= {target:g}x", "PASS" if ok else "FAIL"))

    def info_row(name: str, value: str) -> None:
        rows.append((name, value, "-", "info"))

    try:
        needs_train = [m for m in ("lenet_v2", "minialexnet_v4") if m in only]
        if "recipe" in only and not needs_train:
            bdata.ensure(data_dir)
        if "memory" in only and "lenet_v2" not in needs_train:
            needs_train.insert(0, "lenet_v2")  # memory comes from the lenet runs
        if needs_train:
            t0 = time.perf_counter()
            bdata.ensure(data_dir)
            log(f"data: 60,000+10,000 MNIST-format IDX and 50,000+10,000 CIFAR-10-format pickles in {data_dir} "
                f"({time.perf_counter() - t0:.1f} s)")
        train_res = {}
        for model in needs_train:
            p = args.plan[model]
            log(f"[a] training {model}: {p['rounds']} round(s) of floor/labkit, {p['epochs']} epochs each "
                f"(1 warm-up), {'whole epochs' if not p['batches'] else str(p['batches']) + ' batches per epoch'}; "
                f"images/s per timed epoch:")
            train_res[model] = s = training(model, data_dir, tmp, args, log)
            results[model] = s
            if model in only:
                for v in ("floor", "labkit", "notes", "floor_nchw"):
                    if v in s:
                        info_row(f"{model} {v} images/s", f"{s[v]['best']:.0f} (median {s[v]['median']:.0f}, "
                                                          f"{s[v]['epochs']} epochs)")
                        for u in s[v]["gpu_util"]:
                            info_row(f"{model} {v} GPU utilization", f"{u['mean']:.0f}% mean ({u['samples']} samples)")
                        if s[v]["cuda_max_allocated_mib"]:
                            info_row(f"{model} {v} GPU memory", f"{s[v]['cuda_max_allocated_mib']:.0f} MiB allocated")
                if args.device.startswith("cuda"):
                    for v in ("labkit", "floor"):
                        info_row(f"{model} {v} epoch time", f"{s[v]['epoch_s_best']:.2f} s "
                                                            f"({s[v]['images_per_epoch']} images)")
                ratio = s["labkit"]["best"] / s["floor"]["best"]
                med = s["labkit"]["median"] / s["floor"]["median"]
                if model == "lenet_v2":
                    check("lenet_v2 labkit / floor", ratio, f" (medians {med:.2f}x)")
                    if "notes" in s:
                        check("lenet_v2 labkit / notes", s["labkit"]["best"] / s["notes"]["best"],
                              f" (medians {s['labkit']['median'] / s['notes']['median']:.2f}x)")
                else:
                    check("minialexnet_v4 labkit / floor", ratio, f" (medians {med:.2f}x)")
                    if "notes" in s:
                        info_row("minialexnet_v4 notes / floor", f"{s['notes']['best'] / s['floor']['best']:.2f}x")
                if "floor_nchw" in s:
                    info_row(f"{model} labkit / floor NCHW", f"{s['labkit']['best'] / s['floor_nchw']['best']:.2f}x")
                    if "notes" in s:
                        info_row(f"{model} floor NCHW / notes", f"{s['floor_nchw']['best'] / s['notes']['best']:.2f}x")
        if args.sync_check and args.device.startswith("cuda"):
            log("[a] host syncs per training step (labkit lenet_v2, torch.cuda.set_sync_debug_mode):")
            res = run_variant("labkit", "lenet_v2", data_dir, tmp, 2, 0, args, log, extra=("--sync-debug",))
            sy = results["syncs_per_step"] = res.get("syncs_per_step")
            if sy:
                info_row("lenet_v2 labkit host syncs per step", f"mean {sy['mean']:.2f}, max {sy['max']} "
                                                                f"({sy['steps']} steps)")
        if "memory" in only:
            for model, s in train_res.items():
                if "notes" not in s:
                    continue
                n, lk = s["notes"], s["labkit"]
                info_row(f"[d] {model} peak memory labkit", f"{lk['maxrss_mib']:.0f} MiB max RSS (one process)")
                info_row(f"[d] {model} peak memory notes", f"{n['maxrss_mib']:.0f} MiB max RSS main + workers up "
                                                           f"to {n['workers_maxrss_mib']:.0f} MiB each (PSS of all "
                                                           f"{n['tree_pss_mib'] or 0:.0f} MiB)")
            results["memory"] = {m: {v: {k: s[v][k] for k in ("maxrss_mib", "workers_maxrss_mib", "tree_pss_mib")}
                                     for v in s} for m, s in train_res.items()}
        if "recipe" in only:
            pr = args.plan["recipe"]
            log(f"[e] {FAST_PRESET} as shipped vs with the regularizers on ({', '.join(REGULARIZERS_ON)}) and "
                f"unaugmented ({', '.join(UNAUGMENTED)}): "
                f"{pr['rounds']} round(s), {pr['batches']} batches per epoch; images/s per timed epoch:")
            r = results["recipe"] = recipe(data_dir, tmp, args, log)
            for v in r:
                info_row(f"recipe {v} images/s", f"{r[v]['best']:.0f} (median {r[v]['median']:.0f}, "
                                                  f"{r[v]['epochs']} epochs)")
            info_row("recipe shipped / unaugmented", f"{r['shipped']['best'] / r['unaugmented']['best']:.2f}x (medians "
                                                     f"{r['shipped']['median'] / r['unaugmented']['median']:.2f}x)")
            check("recipe regularizers on / shipped", r["regularizers on"]["best"] / r["shipped"]["best"],
                  f" (medians {r['regularizers on']['median'] / r['shipped']['median']:.2f}x)")
        if "retrieval" in only:
            log("[b] retrieval:")
            r = results["retrieval"] = retrieval(args, log)
            check("retrieval batched / per-query", r["loop_s"] / r["batched_s"],
                  f" ({r['batched_s']:.2f} s vs {r['loop_s']:.1f} s)")
            if r["agree"] < 0.99:
                failed.append("retrieval agreement")
                rows.append(("retrieval same neighbours", f"{100 * r['agree']:.2f}%", ">= 99%", "FAIL"))
        if "sampling" in only:
            log("[c] pair and triplet generation:")
            r = results["sampling"] = sampling(args, log)
            for mode in ("pairs", "triplets"):
                check(f"{mode} vectorized / notes", r[mode]["notes_s"] / r[mode]["labkit_s"],
                      f" ({1000 * r[mode]['labkit_s']:.2f} ms vs {r[mode]['notes_s']:.2f} s)")
                with_index = (r[mode]["notes_s"] + r["notes_index_s"]) / (r[mode]["labkit_s"] + r["labkit_index_s"])
                info_row(f"{mode} incl. one-time index", f"{with_index:.0f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - t_start
    results["rows"] = rows
    results["failed"] = failed
    results["total_s"] = total
    try:
        results["machine"]["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    w = max([len(r[0]) for r in rows] + [10])
    wv = max([len(r[1]) for r in rows] + [10])
    print()
    print(f"{'figure':{w}s}  {'value':{wv}s}  {'target':8s}  verdict")
    for name, value, target, verdict in rows:
        print(f"{name:{w}s}  {value:{wv}s}  {target:8s}  {verdict}")
    print(f"\n{len(rows)} figures, {sum(r[3] == 'PASS' for r in rows)} targets met, {len(failed)} missed "
          f"in {total:.0f} s; load average at the end {results['machine'].get('loadavg_end')}"
          f"{' (QUICK: indicative only)' if args.quick else ''}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
