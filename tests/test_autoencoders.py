"""Autoencoders (note 003): models, the three tasks, the representation/compression/anomaly reports."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import make_cfg, write_mnist
from torch import nn

from labkit.cli.evaluate import evaluate
from labkit.core.errors import IncompatibleError
from labkit.models._shape import count_parameters
from labkit.models.autoencoders import ConvAutoencoder, EncoderClassifier, MLPAutoencoder
from labkit.run.lifecycle import execute
from labkit.tasks.autoencoder import AutoencoderTask, DenoisingAutoencoderTask, SparseAutoencoderTask

CONV_AE = {"_target_": "labkit.models.autoencoders.ConvAutoencoder", "in_channels": 1, "image_size": 28}




def conv(cin, cout, k=3):
    return cin * cout * k * k + cout


def fc(i, o):
    return i * o + o


# ----- models ------------------------------------------------------------------------------------
def test_mlp_autoencoder_shapes_and_parameters():
    m = MLPAutoencoder(1, 28, hidden_units=[256], code_size=128)
    enc = fc(784, 256) + fc(256, 128)          # 200,960 + 32,896
    dec = fc(128, 256) + fc(256, 784)          # 33,024 + 201,488
    assert (enc, dec) == (233_856, 234_512)    # the note's "233 K / 234 K / 468 K"
    assert count_parameters(m.encoder) == enc and count_parameters(m.decoder) == dec
    assert count_parameters(m) == 468_368
    x = torch.randn(5, 1, 28, 28)
    assert m.encode(x).shape == (5, 128)
    assert m(x).shape == x.shape
    assert (m.encode(x) >= 0).all()                        # ReLU after the code layer
    assert isinstance(m.decoder[-2], nn.Linear)            # linear output layer (then unflatten)
    assert [type(l).__name__ for l in m.decoder] == ["Linear", "ReLU", "Linear", "Unflatten"]


def test_conv_autoencoder_shapes_parameters_and_layer_order():
    m = ConvAutoencoder(1, 28, channels=[16, 8, 4])
    enc = conv(1, 16) + conv(16, 8) + conv(8, 4)           # 160 + 1,160 + 292
    dec = conv(4, 8) + conv(8, 16) + conv(16, 1)           # 296 + 1,168 + 145
    assert (enc, dec) == (1_612, 1_609)                    # the note's "1.6 K / 1.6 K / 3.2 K"
    assert count_parameters(m.encoder) == enc and count_parameters(m) == enc + dec == 3_221
    assert [type(l).__name__ for l in m.encoder] == ["Conv2d", "AvgPool2d", "ReLU", "Conv2d", "AvgPool2d", "ReLU",
                                                     "Conv2d", "ReLU"]
    assert [type(l).__name__ for l in m.decoder] == ["Conv2d", "Upsample", "ReLU", "Conv2d", "Upsample", "ReLU",
                                                     "Conv2d"]
    x = torch.randn(3, 1, 28, 28)
    assert m.encode(x).shape == (3, 4, 7, 7)               # 28 -> 14 -> 7
    assert m(x).shape == x.shape
    assert ConvAutoencoder(3, 32)(torch.randn(2, 3, 32, 32)).shape == (2, 3, 32, 32)
    with pytest.raises(IncompatibleError, match="divisible by 4"):
        ConvAutoencoder(1, 30)


def test_encoder_classifier_names_match_the_autoencoder():
    ae = ConvAutoencoder(1, 28)
    clf = EncoderClassifier(CONV_AE, num_classes=10)
    assert clf(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert count_parameters(clf.head) == fc(4 * 7 * 7, 10)
    res = clf.load_state_dict(ae.state_dict(), strict=False)   # name + shape matching
    assert sorted(res.missing_keys) == ["head.bias", "head.weight"]
    assert all(k.startswith("decoder.") for k in res.unexpected_keys)
    assert torch.equal(clf.encoder[0].weight, ae.encoder[0].weight)
    mlp = EncoderClassifier({"_target_": "labkit.models.autoencoders.MLPAutoencoder"}, 10, hidden_units=32)
    assert mlp(torch.randn(2, 1, 28, 28)).shape == (2, 10)


# ----- tasks -------------------------------------------------------------------------------------
class IdentityAE(nn.Module):
    """encode and decode are the identity: the reconstruction is exactly the network's input."""

    def encode(self, x):
        return x

    def decode(self, z):
        return z

    def forward(self, x):
        return x


def test_denoising_loss_targets_the_clean_input():
    task = DenoisingAutoencoderTask(CONV_AE, noise_factor=0.5)
    task.model = IdentityAE()
    x = torch.randn(16, 1, 28, 28)
    torch.manual_seed(0)
    out = task.compute(x)
    noisy = out["input"]
    assert (noisy - x).std().item() == pytest.approx(0.5, abs=0.02)     # Gaussian noise, factor 0.5
    assert torch.equal(out["recon"], noisy)
    # the identity reproduces the noisy input perfectly: a noisy target would give 0,
    # the clean target gives MSE(noisy, clean) = E[(0.5 z)^2] = 0.25
    assert out["loss"].item() == pytest.approx(F.mse_loss(noisy, x).item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(0.25, abs=0.02)
    note = DenoisingAutoencoderTask(CONV_AE, target="noisy")
    note.model = IdentityAE()
    assert note.compute(x)["loss"].item() == 0.0
    # validation/test noise comes from a fixed seed
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(task.corrupt(x, g1), task.corrupt(x, g2))


def test_sparse_penalty_matches_hand_computation():
    task = SparseAutoencoderTask(CONV_AE, sparsity=0.05, beta=0.5)
    code = torch.tensor([[0.0, 0.05, 1.05, 0.55], [0.3, 0.05, 0.05, 0.05]])
    # |z - s| = [0.05, 0, 1.0, 0.5] and [0.25, 0, 0, 0]: 1.8 over 8 elements
    assert task.sparsity_penalty(code).item() == pytest.approx(0.5 * 1.8 / 8)       # nn.L1Loss() mean, as the note
    task_sum = SparseAutoencoderTask(CONV_AE, reduction="sum")
    assert task_sum.sparsity_penalty(code).item() == pytest.approx(0.5 * (1.55 + 0.25) / 2)  # the formula
    task.model = IdentityAE()                        # code = input, reconstruction = input: MSE 0
    out = task.compute(code)
    assert out["terms"]["mse"].item() == 0.0
    assert out["loss"].item() == pytest.approx(0.1125)
    assert AutoencoderTask(CONV_AE).evaluations == ("representation", "compression", "anomaly")


def test_autoencoder_task_rejects_a_classifier_before_training(cfg_factory, tmp_path):
    cfg = cfg_factory("task=autoencoder", "model=lenet")
    with pytest.raises(IncompatibleError, match="needs an autoencoder.*'LeNet' is not one"):
        execute(cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("task,model", [("autoencoder", "mlp_autoencoder"),
                                        ("denoising_autoencoder", "conv_autoencoder"),
                                        ("sparse_autoencoder", "conv_autoencoder")])
def test_fast_dev_run_on_mnist_idx_files(cfg_factory, tmp_path, task, model):
    write_mnist(tmp_path / "data")
    cfg = cfg_factory(f"task={task}", f"model={model}", "data=mnist", "data.val_size=20", "data.batch_size=32",
                      "trainer.fast_dev_run=true")
    metrics = execute(cfg)
    assert metrics["status"] == "ok"
    assert metrics["test/loss"] > 0 and metrics["test/mse"] > 0
    if task == "sparse_autoencoder":
        assert metrics["test/sparsity"] > 0


def _image_tags(run: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return set(acc.Tags()["images"])


def test_denoising_logs_noisy_grid(cfg_factory, tmp_path):
    cfg = cfg_factory("task=denoising_autoencoder", "model=conv_autoencoder", "trainer.max_epochs=1",
                      "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "test=false")
    execute(cfg)
    tags = _image_tags(tmp_path / "run")
    assert {"val/inputs", "val/noisy_inputs", "val/reconstructions"} <= tags  # (+ the run's figures, training/...)
    assert all(t.startswith(("val/", "training/")) for t in tags), tags


# ----- evaluation on a trained conv autoencoder ------------------------------------------------------
@pytest.fixture(scope="module")
def conv_ae_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("conv_ae")
    cfg = make_cfg(["task=autoencoder", "model=conv_autoencoder", "trainer.max_epochs=4"], tmp)
    metrics = execute(cfg)
    assert metrics["status"] == "ok"
    return tmp / "run"


@pytest.mark.slow
def test_evaluate_writes_every_artifact(conv_ae_run, tmp_path):
    seen = {t for t in _image_tags(conv_ae_run) if not t.startswith(("training/", "evaluation/"))}
    assert seen == {"val/inputs", "val/reconstructions"}
    cfg = make_cfg([f"run={conv_ae_run}", "ood=uniform", "draws=3", "tsne_samples=150"], tmp_path, "evaluate")
    results = evaluate(cfg)
    out = conv_ae_run / "evaluation" / "test"
    saved = json.loads((out / "report.json").read_text())
    assert set(saved) >= {"representation", "compression", "anomaly"} and "classification" not in saved
    rep, comp, ano = saved["representation"], saved["compression"], saved["anomaly"]
    # kNN on codes with the whole training split, and with 100 labelled samples (3 draws), vs pixels
    assert rep["code_shape"] == [4, 7, 7] and rep["code_dim"] == 196
    assert rep["knn_accuracy_codes"] > 0.5 and rep["knn_accuracy_pixels"] > 0.5      # chance is 0.10
    assert rep["fewshot_shots"] == 100 and len(rep["fewshot_accuracy_codes"]) == 3
    assert rep["fewshot_accuracy_codes_mean"] > 0.5 and rep["fewshot_accuracy_pixels_std"] >= 0
    assert (conv_ae_run / rep["tsne_png"]).read_bytes()[:4] == b"\x89PNG"
    proj = conv_ae_run / rep["projector_dir"]  # report paths are relative to the run
    assert (proj / "projector_config.pbtxt").exists()
    emb = proj / "00000" / "codes"
    assert len((emb / "metadata.tsv").read_text().splitlines()) == 150
    assert len((emb / "tensors.tsv").read_text().splitlines()) == 150
    assert (emb / "sprite.png").read_bytes()[:4] == b"\x89PNG"
    # compression: 196 float32 = 784 bytes per image = the uint8 image; float16 halves it
    n = comp["samples"]
    assert comp["bytes_images_uint8"] == n * 784 == comp["bytes_codes_float32"]
    assert comp["bytes_codes_float16"] == n * 392 and comp["percent_smaller_float16"] == pytest.approx(50.0)
    assert comp["reconstruction_mse_float16"] == pytest.approx(comp["reconstruction_mse_float32"], rel=0.05)
    # anomaly detection against uniform noise
    assert ano["ood"] == "uniform" and ano["samples_ood"] == ano["samples_in"] == n
    assert ano["auroc"] > 0.95
    assert ano["in_distribution_correct_percent"] > 90 and ano["ood_correct_percent"] > 90
    assert ano["mean_l2_ood"] > ano["mean_l2_in"]
    assert (conv_ae_run / ano["boxplot_png"]).read_bytes()[:4] == b"\x89PNG"
    assert results["anomaly"]["auroc"] == ano["auroc"]


@pytest.mark.slow
def test_encoder_classifier_from_scratch_and_pretrained(conv_ae_run, cfg_factory):
    from labkit.core.safe_load import load_checkpoint, state_dict_of
    from labkit.run.directory import find_checkpoint

    ae = state_dict_of(load_checkpoint(find_checkpoint(conv_ae_run)))
    scratch = execute(cfg_factory("model=encoder_classifier", "trainer.fast_dev_run=true", sub="scratch"))
    assert scratch["status"] == "ok" and scratch["params"] == 1_612 + fc(196, 10)
    pytest.importorskip("labkit.models.init", reason="model.init_from is handled by labkit.models.init")
    from labkit.run.lifecycle import build
    from labkit.run.plan import make

    _, task, _ = build(make(cfg_factory("model=encoder_classifier", f"init_from={conv_ae_run}", sub="pre")))
    for name, w in task.model.state_dict().items():
        if name.startswith("encoder."):
            assert torch.equal(w, ae[name]), name


def test_anomaly_with_a_data_config_as_ood(cfg_factory, tmp_path):
    write_mnist(tmp_path / "data")
    write_mnist(tmp_path / "data", folder="FashionMNIST", seed=5)
    cfg = cfg_factory("task=autoencoder", "model=conv_autoencoder", "data=mnist", "data.val_size=20",
                      "data.batch_size=50", "trainer.max_epochs=1", "test=false")
    execute(cfg)
    ecfg = cfg_factory(f"run={tmp_path / 'run'}", "ood=fashion_mnist", "shots=20", "draws=1", "tsne_samples=40",
                       "++reports=[anomaly]", name="evaluate")
    ano = evaluate(ecfg)["anomaly"]
    assert ano["ood"] == "fashion_mnist" and ano["samples_ood"] == 100 and ano["samples_fit_ood"] == 20
    assert 0.0 <= ano["auroc"] <= 1.0 and (tmp_path / "run" / ano["boxplot_png"]).exists()
    with pytest.raises(Exception, match="ood='nope' is invalid"):
        evaluate(cfg_factory(f"run={tmp_path / 'run'}", "ood=nope", "++reports=[anomaly]", name="evaluate"))


def test_encoder_classifier_head_for_freezing():
    from labkit.models.heads import head_parameter_names

    clf = EncoderClassifier(CONV_AE, num_classes=10, hidden_units=16)
    assert head_parameter_names(clf) == ["head.0.weight", "head.0.bias", "head.3.weight", "head.3.bias"]


@pytest.mark.parametrize("preset,model,task,lr", [
    ("ae_mnist", "MLPAutoencoder", "AutoencoderTask", 0.01),
    ("conv_ae_mnist", "ConvAutoencoder", "AutoencoderTask", 0.01),
    ("denoising_conv_ae_mnist", "ConvAutoencoder", "DenoisingAutoencoderTask", 0.01),
    ("sparse_conv_ae_mnist", "ConvAutoencoder", "SparseAutoencoderTask", 0.001),
])
def test_presets_follow_note_003(cfg_factory, preset, model, task, lr):
    cfg = cfg_factory(f"experiment={preset}")
    assert cfg.model._target_.endswith(model) and cfg.task._target_.endswith(task)
    assert cfg.data._target_.endswith("MNISTDataModule") and cfg.data.batch_size == 1024
    assert cfg.task.optimizer._target_ == "torch.optim.SGD" and cfg.task.optimizer.lr == lr
    assert cfg.task.optimizer.momentum == 0.99 and cfg.trainer.max_epochs == 150


def test_unknown_task_key_is_reported(cfg_factory):
    from labkit.core.errors import ConfigError

    with pytest.raises(ConfigError, match="Did you mean 'task.noise_factor'"):
        execute(cfg_factory("task=denoising_autoencoder", "model=conv_autoencoder", "+task.noise_facter=0.3"))
