"""Schema of ``conf/trainer/``: Lightning's ``Trainer`` arguments, those every supported Lightning release takes.
``logger`` and ``callbacks`` are not among them: labkit builds those from the ``logger`` and ``callbacks`` groups.
Values are checked by :meth:`Trainer.check` (the counts) and, against this machine, by the pre-flight."""
from __future__ import annotations

from typing import Any, Mapping, Optional

from labkit.core import checks
from labkit.schemas.base import schema

# Lightning's accelerator names (Trainer(accelerator=...)); gpu = cuda or mps, tpu = xla
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "xla")


@schema("pytorch_lightning.Trainer", "trainer")
class Trainer:
    """Lightning's Trainer."""

    accelerator: Any = "auto"  # auto (the GPU when there is one, else the CPU), cpu, gpu, cuda, mps, tpu
    strategy: Any = "auto"  # auto, ddp, ddp_spawn, fsdp, ...
    devices: Any = "auto"  # auto, a count (GPUs, or CPU processes), -1 (every GPU), or GPU indices [0,1]
    num_nodes: int = 1  # machines (DDP)
    precision: Any = None  # 32-true, 16-mixed, bf16-mixed, ...
    fast_dev_run: Any = False  # true or N: run N batches of each stage, once, to test the code
    max_epochs: Optional[int] = None  # stop after this many epochs (-1: no limit)
    min_epochs: Optional[int] = None  # train at least this many epochs
    max_steps: int = -1  # stop after this many optimizer steps (-1: no limit)
    min_steps: Optional[int] = None  # train at least this many steps
    max_time: Any = None  # stop after this wall time ("DD:HH:MM:SS" or a dict)
    limit_train_batches: Any = None  # a count or a fraction of the training batches per epoch
    limit_val_batches: Any = None  # a count or a fraction of the validation batches
    limit_test_batches: Any = None  # a count or a fraction of the test batches
    limit_predict_batches: Any = None  # a count or a fraction of the prediction batches
    overfit_batches: Any = 0.0  # train and validate on this many (or this fraction of) training batches
    val_check_interval: Any = None  # validate every N batches or fraction of an epoch
    check_val_every_n_epoch: Optional[int] = 1  # validate every N epochs
    num_sanity_val_steps: Optional[int] = None  # validation batches run before training
    log_every_n_steps: Optional[int] = None  # how often training metrics are logged
    enable_checkpointing: Optional[bool] = None  # (labkit's checkpoint callbacks are in the callbacks group)
    enable_progress_bar: Optional[bool] = None  # progress bars (or plain lines in a log file)
    enable_model_summary: Optional[bool] = None  # the model summary at the start
    accumulate_grad_batches: int = 1  # batches whose gradients are summed before each step
    gradient_clip_val: Any = None  # clip gradients at this value (null: no clipping)
    gradient_clip_algorithm: Optional[str] = None  # norm or value
    deterministic: Any = None  # deterministic algorithms (true, false or "warn")
    benchmark: Optional[bool] = None  # cudnn.benchmark
    inference_mode: bool = True  # torch.inference_mode for validation and test
    use_distributed_sampler: bool = True  # Lightning's DistributedSampler under DDP
    profiler: Any = None  # simple, advanced, pytorch, or null
    detect_anomaly: bool = False  # autograd's anomaly detection
    barebones: bool = False  # no logging, progress or checkpoints (speed tests)
    plugins: Any = None  # Lightning plugins
    sync_batchnorm: bool = False  # synchronise batch-norm statistics across DDP processes
    reload_dataloaders_every_n_epochs: int = 0  # rebuild the data loaders every N epochs
    default_root_dir: Any = None  # the run directory (paths.output_dir)

    @staticmethod
    def check(a: Mapping[str, Any]) -> None:
        """max_epochs and max_steps integers >= -1; min_epochs >= 0; log_every_n_steps, accumulate_grad_batches,
        check_val_every_n_epoch and num_nodes > 0; gradient_clip_val >= 0; limit_*_batches a count or a fraction;
        accelerator one of Lightning's names; devices auto, a count > 0, -1 or GPU indices."""
        get = a.get
        checks.integer("trainer.max_epochs", get("max_epochs"), -1, optional=True, hint="-1 = no limit")
        checks.non_negative_int("trainer.min_epochs", get("min_epochs"), optional=True)
        checks.integer("trainer.max_steps", get("max_steps"), -1, optional=True, hint="-1 = no limit")
        for key in ("log_every_n_steps", "accumulate_grad_batches", "check_val_every_n_epoch"):
            checks.positive_int(f"trainer.{key}", get(key), optional=True)
        checks.non_negative("trainer.gradient_clip_val", get("gradient_clip_val"), optional=True)
        for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
            checks.count_or_fraction(f"trainer.{key}", get(key), whole=True, optional=True)
        checks.positive_int("trainer.num_nodes", get("num_nodes"), optional=True)
        if isinstance(get("accelerator"), str):  # (an Accelerator object given by _target_ is Lightning's to check)
            checks.one_of("trainer.accelerator", get("accelerator"), ACCELERATORS,
                          hint="auto: the GPU when there is one, else the CPU")
        if devices_wanted(get("devices")) == 0:
            raise checks.invalid("trainer.devices", get("devices"), "auto, a number of devices (GPUs, or CPU "
                                 "processes) > 0, -1 (every GPU of the node), or GPU indices such as [0,1] or '0,1'")


def devices_wanted(devices: Any) -> int | None:
    """How many devices ``trainer.devices`` asks for: None for auto/null/-1 (what there is), 0 for a value Lightning
    cannot read (0, an empty list, a word other than auto, a negative count other than -1)."""
    if devices is None or devices == "auto" or devices == -1 or devices == "-1":
        return None
    if isinstance(devices, bool):
        return 0
    if isinstance(devices, int):
        return devices if devices > 0 else 0
    if isinstance(devices, str):
        parts = [p.strip() for p in devices.split(",") if p.strip()]
        if len(parts) == 1 and parts[0].isdigit():  # "2": a count, as Lightning reads it
            return int(parts[0])
        return len(parts) if parts and all(p.isdigit() for p in parts) else 0
    if isinstance(devices, (list, tuple)) or type(devices).__name__ == "ListConfig":
        items = list(devices)
        return len(items) if items and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                           for i in items) else 0
    return 0
