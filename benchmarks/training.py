"""One training-throughput measurement per process: ``python benchmarks/training.py --variant V ...``.

Variants (same network, batch 1024, SGD lr 0.01 momentum 0.99, same generated files):

- ``floor``:  the compute floor. The training split is read once, normalized (CIFAR: centre 28x28 crop) and kept
  as float tensors on the device; every epoch steps over a fresh random permutation with
  ``x[idx]`` indexing. No DataLoader, no logging, no host sync inside the epoch.
- ``labkit``: ``labkit.run.lifecycle.execute(cfg)`` with the config composed from ``conf/`` exactly like ``train.py``
  (``experiment=lenet_v2_mnist`` / ``minialexnet_v4_cifar10``: TensorBoard logger, default callbacks
  = two ModelCheckpoints, TQDM progress bar, LR monitor, EpochSeed, FiniteLossGuard). Only the epoch count,
  ``test=false`` and ``trainer.limit_val_batches`` are changed; an extra callback timestamps the epochs.
- ``notes``:  the lab notes' loop (note 001 ``train_classifier``): a torchvision dataset with per-sample PIL
  transforms, ``DataLoader(batch_size=1024, num_workers=2, shuffle=True)``, ``.item()`` and sklearn accuracy
  per step, two ``SummaryWriter.add_scalar`` per step, ``torch.save`` of the weights per epoch.

An epoch's time runs from one training-epoch start to the next (labkit: from ``on_train_epoch_start`` to the
next one / ``on_train_end``, so checkpointing, logging, the progress bar, reseeding and the sampler are all
inside it) minus the validation loop (``on_validation_epoch_start`` .. ``on_validation_epoch_end``), which the
floor and the notes' loop do not run. Epoch 0 is the warm-up and is reported but not used.

The result (JSON) goes to ``--json``; peak RSS of this process (and of its DataLoader workers) is included.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

BATCH = 1024
LR, MOMENTUM = 0.01, 0.99
VAL_SIZE = 5000  # conf/data/{mnist,cifar10}.yaml: labkit trains on the rest
SPECS = {
    "lenet_v2": {"data": "mnist", "experiment": "lenet_v2_mnist", "channels": 1,
                 "mean": (0.1307,), "std": (0.3081,)},
    "minialexnet_v4": {"data": "cifar10", "experiment": "minialexnet_v4_cifar10", "channels": 3,
                       "mean": (0.4914, 0.4822, 0.4465), "std": (0.2023, 0.1994, 0.2010)},
}


def build_net(model: str):
    from labkit.models import LeNetV2, MiniAlexNetV4

    if model == "lenet_v2":
        return LeNetV2(1, 28, 10)
    return MiniAlexNetV4(3, 28, 10, dropout=0.5)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----- GPU utilization ----------------------------------------------------------------------------
class GpuSampler:
    """Samples GPU utilization every 200 ms with ``nvidia-smi -lms 200`` (pynvml if nvidia-smi is missing)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.proc = None
        self.samples: list[float] = []
        self._nvml = None
        self._thread = None
        self._stop = False

    def start(self) -> None:
        if self.device.type != "cuda":
            return
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        # nvidia-smi numbers GPUs its own way (PCI order, ignoring CUDA_VISIBLE_DEVICES): select by UUID when known
        uuid = str(getattr(torch.cuda.get_device_properties(index), "uuid", "") or "")
        gpu_id = (uuid if uuid.startswith("GPU-") else f"GPU-{uuid}") if uuid else str(index)
        exe = shutil.which("nvidia-smi")
        if exe:
            self.proc = subprocess.Popen([exe, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "-lms", "200", "-i", gpu_id], stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, text=True)
            return
        try:
            import threading

            import pynvml

            pynvml.nvmlInit()
            handle = (pynvml.nvmlDeviceGetHandleByUUID(gpu_id) if uuid else pynvml.nvmlDeviceGetHandleByIndex(index))

            def loop():
                while not self._stop:
                    self.samples.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))
                    time.sleep(0.2)

            self._thread = threading.Thread(target=loop, daemon=True)
            self._thread.start()
        except Exception:  # no way to sample: report nothing
            pass

    def stop(self) -> dict | None:
        if self.proc is not None:
            self.proc.terminate()
            out, _ = self.proc.communicate(timeout=10)
            for line in out.splitlines():
                try:
                    self.samples.append(float(line.strip()))
                except ValueError:
                    pass
        elif self._thread is not None:
            self._stop = True
            self._thread.join(timeout=2)
        if not self.samples:
            return None
        s = np.asarray(self.samples)
        return {"mean": float(s.mean()), "median": float(np.median(s)), "samples": len(s)}


# ----- memory of the process tree ---------------------------------------------------------------------
class TreeMemory:
    """Peak proportional set size (PSS) of this process plus its children (the notes' DataLoader workers),
    sampled every ``period`` seconds from /proc: unlike the sum of RSS it counts pages shared after fork() once."""

    def __init__(self, period: float = 0.5, enabled: bool = True):
        import threading

        self.period, self.peak_mib, self.enabled = period, 0.0, enabled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _pss_kib(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    @staticmethod
    def _children(pid: int) -> list[int]:
        out = []
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out += [int(c) for c in f.read().split()]
        except OSError:
            pass
        return out

    def sample(self) -> float:
        todo, total = [os.getpid()], 0
        while todo:
            pid = todo.pop()
            total += self._pss_kib(pid)
            todo += self._children(pid)
        self.peak_mib = max(self.peak_mib, total / 1024)
        return total / 1024

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.sample()

    def __enter__(self):
        if self.enabled and os.path.exists("/proc/self/smaps_rollup"):
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)


# ----- labkit ------------------------------------------------------------------------------------
class EpochTimer(pl.Callback):
    """Timestamps training epochs (validation loop excluded, see the module docstring).

    ``sync_debug``: on a GPU, count the host-device synchronizations of the timed epochs' training steps with
    ``torch.cuda.set_sync_debug_mode("warn")`` (the timed figures of such a run are not representative).
    """

    instances: list["EpochTimer"] = []

    def __init__(self, gpu_util: bool = False, sync_debug: bool = False):
        self.sync_debug = sync_debug
        self.syncs: list[int] = []
        self._warn_ctx = None
        self._caught = None
        self.epochs: list[dict] = []
        self._cur: dict | None = None
        self._v0 = 0.0
        self.gpu = None
        self.gpu_util = gpu_util
        self.gpu_stats = None
        EpochTimer.instances.append(self)

    def _now(self, trainer) -> float:
        _sync(trainer.strategy.root_device)
        return time.perf_counter()

    def _close(self, t: float) -> None:
        if self._cur is not None:
            self._cur["seconds"] = t - self._cur.pop("start") - self._cur["val_seconds"]
            self.epochs.append(self._cur)
            self._cur = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        t = self._now(trainer)
        self._close(t)
        if len(self.epochs) == 1 and self.gpu_util and self.gpu is None:  # after the warm-up epoch
            self.gpu = GpuSampler(trainer.strategy.root_device)
            self.gpu.start()
        self._cur = {"start": time.perf_counter(), "images": 0, "steps": 0, "val_seconds": 0.0}
        if self.sync_debug and self.epochs and trainer.strategy.root_device.type == "cuda":
            import warnings

            self._warn_ctx = warnings.catch_warnings(record=True)
            self._caught = self._warn_ctx.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")

    def _sync_debug_off(self) -> None:
        if self._warn_ctx is not None:
            torch.cuda.set_sync_debug_mode("default")
            self._warn_ctx.__exit__(None, None, None)
            self._warn_ctx = self._caught = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._caught is not None:  # syncs since the previous step's end: fetch, transfer, transform, step, hooks
            self.syncs.append(sum("synchroniz" in str(w.message) for w in self._caught))
            self._caught.clear()
        self._cur["images"] += len(batch[-1])
        self._cur["steps"] += 1

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._sync_debug_off()
        if not trainer.sanity_checking:
            self._v0 = self._now(trainer)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and self._cur is not None:
            self._cur["val_seconds"] += self._now(trainer) - self._v0

    def on_train_end(self, trainer, pl_module) -> None:
        self._sync_debug_off()
        self._close(self._now(trainer))
        if self.gpu is not None:
            self.gpu_stats = self.gpu.stop()


def run_labkit(args, device: torch.device) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    import labkit.run.directory  # noqa: F401  (resolvers)
    from labkit.run.lifecycle import execute

    spec = SPECS[args.model]
    out = Path(args.work_dir)
    overrides = [
        f"experiment={args.experiment or spec['experiment']}",
        f"paths.data_dir={args.data_dir}",
        f"paths.log_dir={out / 'logs'}",
        f"trainer.max_epochs={args.epochs}",
        f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
        f"trainer.devices={[device.index] if device.index is not None else 1}",
        f"trainer.precision={args.precision}",
        f"task.compile={str(args.compile).lower()}",
        "test=false",
        f"trainer.limit_val_batches={args.val_batches}",
        f"trainer.limit_train_batches={args.batches if args.batches else 'null'}",
        "+callbacks.bench_timer._target_=benchmarks.training.EpochTimer",
        f"+callbacks.bench_timer.gpu_util={str(device.type == 'cuda').lower()}",
        f"+callbacks.bench_timer.sync_debug={str(args.sync_debug).lower()}",
    ] + ([f"data.channels_last={str(args.channels_last).lower()}"] if args.channels_last is not None else []) \
        + list(args.override or [])
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out / "run")
    execute(cfg)
    from benchmarks.training import EpochTimer as Timer  # the class Hydra instantiated (this file may be __main__)

    timer = Timer.instances[-1]
    out = {"epochs": timer.epochs, "gpu_util": timer.gpu_stats}
    if args.sync_debug:
        out["syncs_per_step"] = {"steps": len(timer.syncs), "max": max(timer.syncs, default=0),
                                 "mean": float(np.mean(timer.syncs)) if timer.syncs else 0.0}
    return out


# ----- compute floor -----------------------------------------------------------------------------
def load_split(model: str, data_dir: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The official training set as uint8 (N, C, H, W) + int64 labels, read with labkit's readers."""
    from labkit.data.vision import _read_idx

    root = Path(data_dir)
    if model == "lenet_v2":
        raw = root / "MNIST" / "raw"
        x = torch.from_numpy(_read_idx(raw / "train-images-idx3-ubyte").copy()).unsqueeze(1)
        y = torch.from_numpy(_read_idx(raw / "train-labels-idx1-ubyte").astype(np.int64))
        return x, y
    xs, ys = [], []
    for i in range(1, 6):
        with open(root / "cifar-10-batches-py" / f"data_batch_{i}", "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(entry["labels"], dtype=np.int64))
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def run_floor(args, device: torch.device) -> dict:
    spec = SPECS[args.model]
    x, y = load_split(args.model, args.data_dir)
    n = len(y) - VAL_SIZE  # as many training images as labkit's split, hence the same batches per epoch
    x, y = x[:n], y[:n]
    if x.shape[-1] != 28:
        top = (x.shape[-1] - 28) // 2
        x = x[..., top:top + 28, top:top + 28]
    mean = torch.tensor(spec["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(spec["std"]).view(1, -1, 1, 1)
    x = x.float().div_(255).sub_(mean).div_(std)  # in place: no full-size temporaries
    # the same memory layout as labkit's batches (channels-last on the CPU by default: data.channels_last);
    # floor_nchw keeps the plain NCHW layout of the notes
    channels_last = args.variant == "floor" and (args.channels_last if args.channels_last is not None
                                                 else device.type == "cpu")
    x = x.to(device=device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    y = y.to(device)
    torch.manual_seed(0)
    net = build_net(args.model).to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    step_net = torch.compile(net) if args.compile else net
    bf16 = args.precision.startswith("bf16")
    steps = math.ceil(n / BATCH)
    if args.batches:
        steps = min(steps, args.batches)
    epochs, gpu = [], None
    for e in range(args.epochs):
        if e == 1:
            gpu = GpuSampler(device)
            gpu.start()
        _sync(device)
        t0 = time.perf_counter()
        perm = torch.randperm(n, device=device)
        images = 0
        for i in range(steps):
            idx = perm[i * BATCH:(i + 1) * BATCH]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(step_net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            images += len(idx)
        _sync(device)
        epochs.append({"images": images, "steps": steps, "seconds": time.perf_counter() - t0, "val_seconds": 0.0})
    if not math.isfinite(float(loss.detach())):
        raise FloatingPointError("the floor's loss is not finite")
    return {"epochs": epochs, "gpu_util": gpu.stop() if gpu else None, "channels_last": channels_last}


# ----- the notes' loop ---------------------------------------------------------------------------
class AverageValueMeter:
    """The notes' meter."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.sum = 0
        self.num = 0

    def add(self, value, num):
        self.sum += value * num
        self.num += num

    def value(self):
        try:
            return self.sum / self.num
        except ZeroDivisionError:
            return None


def notes_dataset(model: str, data_dir: str):
    """torchvision's MNIST / CIFAR10 over the generated files, with the notes' per-sample transforms.

    CIFAR10: torchvision checks the md5 of the official files, which generated files cannot match; the
    subclass below only skips those two checks (files must exist) and is otherwise torchvision's class:
    same pickle loading, same ``Image.fromarray`` per sample, same transform pipeline.
    """
    from torchvision import datasets, transforms

    spec = SPECS[model]
    if model == "lenet_v2":
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(spec["mean"], spec["std"])])
        return datasets.MNIST(root=data_dir, train=True, download=False, transform=tf)

    class GeneratedCIFAR10(datasets.CIFAR10):
        def _check_integrity(self) -> bool:
            return all((Path(self.root) / self.base_folder / f).exists() for f, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    tf = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.ColorJitter(), transforms.RandomCrop(28),
                             transforms.ToTensor(), transforms.Normalize(spec["mean"], spec["std"])])
    return GeneratedCIFAR10(root=data_dir, train=True, download=False, transform=tf)


def run_notes(args, device: torch.device) -> dict:
    from sklearn.metrics import accuracy_score
    from torch.utils.data import DataLoader
    from torch.utils.tensorboard import SummaryWriter

    ds = notes_dataset(args.model, args.data_dir)
    loader = DataLoader(ds, batch_size=BATCH, num_workers=2, shuffle=True)
    torch.manual_seed(0)
    model = build_net(args.model).to(device)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), LR, momentum=MOMENTUM)
    loss_meter, acc_meter = AverageValueMeter(), AverageValueMeter()
    out = Path(args.work_dir)
    writer = SummaryWriter(str(out / "notes_logs"))
    global_step = 0
    epochs = []
    for e in range(args.epochs):
        _sync(device)
        t0 = time.perf_counter()
        loss_meter.reset()
        acc_meter.reset()
        model.train()
        images = steps = 0
        with torch.set_grad_enabled(True):
            for i, batch in enumerate(loader):
                if args.batches and i >= args.batches:
                    break
                x = batch[0].to(device)
                y = batch[1].to(device)
                output = model(x)
                n = x.shape[0]
                global_step += n
                l = criterion(output, y)  # noqa: E741  (the notes' name)
                l.backward()
                optimizer.step()
                optimizer.zero_grad()
                acc = accuracy_score(y.to("cpu"), output.to("cpu").max(1)[1])
                loss_meter.add(l.item(), n)
                acc_meter.add(acc, n)
                writer.add_scalar("loss/train", loss_meter.value(), global_step=global_step)
                writer.add_scalar("accuracy/train", acc_meter.value(), global_step=global_step)
                images += n
                steps += 1
        writer.add_scalar("loss/train", loss_meter.value(), global_step=global_step)  # the notes' end-of-epoch values
        writer.add_scalar("accuracy/train", acc_meter.value(), global_step=global_step)
        torch.save(model.state_dict(), out / f"notes-{e + 1}.pth")
        _sync(device)
        epochs.append({"images": images, "steps": steps, "seconds": time.perf_counter() - t0, "val_seconds": 0.0})
    writer.close()
    return {"epochs": epochs, "gpu_util": None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=("floor", "floor_nchw", "labkit", "notes"), required=True)
    p.add_argument("--model", choices=tuple(SPECS), required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--work-dir", default=None, help="run outputs (default: a temporary folder)")
    p.add_argument("--epochs", type=int, default=3, help="epochs in all, the first one being the warm-up")
    p.add_argument("--batches", type=int, default=0, help="training batches per epoch (0 = whole epochs)")
    p.add_argument("--val-batches", type=int, default=2, help="labkit: trainer.limit_val_batches")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="32-true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--override", action="append", help="extra Hydra override for the labkit variant")
    p.add_argument("--experiment", default=None, help="labkit: this experiment preset instead of the model's notes' one")
    p.add_argument("--sync-debug", action="store_true", help="labkit on a GPU: count host syncs per training step")
    p.add_argument("--channels-last", type=lambda v: {"true": True, "false": False}[v.lower()], default=None,
                   help="true/false: memory layout of the floor's tensors and labkit's batches (data.channels_last); "
                        "default: labkit's own default (channels-last on the CPU)")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    own_tmp = args.work_dir is None
    if own_tmp:
        args.work_dir = tempfile.mkdtemp(prefix=f"labkit-bench-{args.variant}-")
    t0 = time.perf_counter()
    try:
        # PSS only for the notes' process tree (main + DataLoader workers); reading smaps_rollup costs ~16 ms and
        # holds the mmap lock, so the single-process variants, whose max RSS says it all, are not sampled
        with TreeMemory(period=0.5, enabled=args.variant == "notes") as mem:
            result = {"floor": run_floor, "floor_nchw": run_floor, "labkit": run_labkit,
                  "notes": run_notes}[args.variant](args, device)
    finally:
        if own_tmp:
            shutil.rmtree(args.work_dir, ignore_errors=True)
    result["tree_pss_peak_mib"] = mem.peak_mib if mem.enabled else None
    result.update({
        "variant": args.variant, "model": args.model, "device": str(device),
        "wall_seconds": time.perf_counter() - t0,
        # Linux: kilobytes. CHILDREN = the largest single finished child (the notes' DataLoader workers)
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children_maxrss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
    })
    if device.type == "cuda":
        result["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
