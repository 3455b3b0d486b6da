"""benchmarks/fidelity.py keeps running: every row, --quick, on tiny files in the genuine formats written here."""
import json
import sys

import pytest
from conftest import ROOT, write_cifar, write_mnist

sys.path.insert(0, str(ROOT))
from benchmarks import fidelity  # noqa: E402


@pytest.mark.slow
def test_quick_fidelity_runs_every_row_side_by_side(tmp_path, capsys):
    data = tmp_path / "data"
    write_mnist(data, n_train=200, n_test=100)
    write_mnist(data, folder="FashionMNIST", n_train=150, n_test=60, seed=7)
    write_cifar(data, 10, n_train=100, n_test=50)
    out = tmp_path / "fidelity.json"
    rc = fidelity.main(["--data-dir", str(data), "--quick", "--threads", "1", "--json", str(out), "--seeds", "0,1"])
    assert rc == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["row"] for r in rows] == list(fidelity.ROWS)
    for r in rows:
        assert r["epochs"] == 1
        assert 0.0 <= r["notes"] <= 1.0 and 0.0 <= r["labkit"] <= 1.0
        assert r["difference"] == pytest.approx(r["labkit"] - r["notes"])
        # each side's figure is the median over the seeds (with two: their mean), each seed a run of its own
        assert [s["seed"] for s in r["per_seed"]] == [0, 1]
        for side in ("notes", "labkit", "labkit_best"):
            assert r[side] == pytest.approx(sum(s[side] for s in r["per_seed"]) / 2)
        assert r["notes_mean"] == pytest.approx(r["notes"])
        assert r["pass"] == (abs(r["difference"]) <= fidelity.TOLERANCE + 1e-9)
    by = {r["row"]: r for r in rows}
    # the notes' loop trains on labkit's training split: 90% of the files' training images
    assert by["lenet"]["train_images"] == 180 and by["minialexnet_v4"]["train_images"] == 90
    # note 004's Keras loop: labkit's training split of the Fashion files, its hold-out as validation_data
    assert by["mlp_fashion"]["train_images"] == by["lenet_alt_fashion"]["train_images"] == 135
    assert all(s["notes_epochs_run"] == 1 for s in by["lenet_alt_fashion"]["per_seed"])
    for name in ("sparse_ae", "siamese", "triplet"):
        assert 0.0 < by[name]["pixels"] <= 1.0  # the raw-pixel baseline on the same gallery
    table = capsys.readouterr().out
    for name in fidelity.ROWS:
        assert any(line.startswith(name) and ("PASS" in line or "FAIL" in line) for line in table.splitlines())


def test_missing_files_are_named_before_anything_trains(tmp_path, capsys):
    write_mnist(tmp_path / "data", n_train=50, n_test=20)  # MNIST only: the CIFAR-10 row must be refused
    with pytest.raises(SystemExit) as e:
        fidelity.main(["--data-dir", str(tmp_path / "data"), "--rows", "lenet,minialexnet_v4", "--epochs", "1"])
    assert e.value.code == 2
    err = capsys.readouterr()
    assert "cifar-10-batches-py" in err.err and "data_batch_1" in err.err
    assert "[fidelity]" not in err.out  # not even the MNIST row started


def test_a_failed_seed_does_not_decide_the_row():
    """Medians over seeds: one seed whose notes' run collapsed (0.41) leaves the row to the typical runs."""
    runs = [dict(notes=n, labkit=l, labkit_best=l, pixels=0.74, notes_seconds=1.0, labkit_seconds=2.0)
            for n, l in ((0.78, 0.775), (0.41, 0.78), (0.77, 0.765))]
    row = fidelity.aggregate(runs)
    assert row["notes"] == 0.77 and row["labkit"] == 0.775 and row["pass"]
    assert row["notes_mean"] == pytest.approx(0.6533, abs=1e-4)  # the mean would have failed the row by 11 points
    assert row["notes_seconds"] == 3.0 and row["labkit_seconds"] == 6.0
    runs[0]["labkit"] = runs[2]["labkit"] = 0.70  # labkit's typical run 7 points below: FAIL
    assert not fidelity.aggregate(runs)["pass"]


@pytest.mark.parametrize("args, says", [(["--rows", "lenet,alexnet"], "unknown rows ['alexnet']"),
                                        (["--seeds", "0,x"], "--seeds '0,x'"), (["--seeds", ","], "--seeds is empty"),
                                        (["--epochs", "0"], "--epochs 0")])
def test_bad_arguments_are_refused(tmp_path, capsys, args, says):
    with pytest.raises(SystemExit):
        fidelity.main(["--data-dir", str(tmp_path)] + args)
    assert says in capsys.readouterr().err


FAST = ["lenet_v2_mnist_fast", "siamese_mnist_fast", "triplet_mnist_fast", "sparse_conv_ae_mnist_fast",
        "minialexnet_v4_cifar10_fast"]


@pytest.mark.slow
@pytest.mark.parametrize("preset", FAST)
def test_fast_presets_train_with_their_one_cycle_schedule(preset, tmp_path):
    """Each fast preset composes and trains on tiny files; its one-cycle schedule takes total_steps from the
    trainer (conf/task/scheduler/onecycle.yaml: total_steps null): the number of optimizer steps of the run."""
    from conftest import make_cfg

    from labkit.run.lifecycle import execute

    write_mnist(tmp_path / "data", n_train=120, n_test=40)
    write_cifar(tmp_path / "data", 10, n_train=100, n_test=40)
    cfg = make_cfg([f"experiment={preset}", "data.val_size=0.2", "trainer.max_epochs=2", "logger=none",
                    "data.batch_size=32", "trainer.enable_model_summary=false"], tmp_path)
    assert cfg.task.scheduler._target_.endswith("OneCycleLR") and cfg.task.scheduler.total_steps is None
    metrics = execute(cfg)
    assert metrics["status"] == "ok" and metrics["epochs"] == 2
    steps_per_epoch = -(-int(0.8 * (120 if "mnist" in preset else 100)) // 32)
    assert metrics["global_step"] == 2 * steps_per_epoch
    from pathlib import Path

    from labkit.core.safe_load import load_checkpoint

    ckpt = load_checkpoint(Path(cfg.paths.output_dir) / metrics["last_checkpoint"])  # relative to the run
    sched = ckpt["lr_schedulers"][0]
    assert sched["total_steps"] == 2 * steps_per_epoch and sched["last_epoch"] == 2 * steps_per_epoch
    assert ckpt["optimizer_states"][0]["param_groups"][0]["max_lr"] == cfg.task.scheduler.max_lr


def test_keras_loop_stops_after_patience_epochs_without_a_lower_validation_loss():
    """Note 004's EarlyStopping(patience=10), transcribed: no training batch, so the validation loss never falls
    after the first epoch, and the loop stops after 1 + patience epochs with the last model kept."""
    import torch

    model = fidelity.glorot(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)))
    val = [(torch.randn(6, 1, 2, 2), torch.tensor([0, 1, 0, 1, 0, 1]))]
    kept, ran = fidelity.train_keras(model, [], val, epochs=30, patience=3)
    assert kept is model and ran == 4
    assert fidelity.train_keras(model, [], val, epochs=2, patience=3)[1] == 2
    assert torch.count_nonzero(model[1].bias) == 0  # Keras' zero biases (no step was taken)
    assert sum(p.numel() for p in fidelity.keras_lenet_alt().parameters()) == 61_706
    assert sum(p.numel() for p in fidelity.keras_mlp().parameters()) == 266_610
