"""Note 004 on Fashion-MNIST (issue 33): the MLP's hidden sizes / activation / init options, the LeNet variant
(lenet_alt), and the presets mlp_fashion_mnist, lenet_fashion_mnist, lenet_fashion_mnist_fast on tiny generated
Fashion-MNIST IDX files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import write_mnist
from torch import nn

from labkit.core.errors import ConfigError
from labkit.models import MLP, LeNetAlt
from labkit.run import signatures
from labkit.run.lifecycle import execute


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_mlp_default_is_still_784_512_10_tanh_with_the_old_tensor_names():
    m = MLP(1, 28, 10)
    assert n_params(m) == 784 * 512 + 512 + 512 * 10 + 10
    assert list(m.state_dict()) == ["hidden_layer.weight", "hidden_layer.bias", "output_layer.weight",
                                    "output_layer.bias"]
    assert isinstance(m.activation, nn.Tanh)
    assert m(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_mlp_note_004_784_300_100_10_relu():
    m = MLP(1, 28, 10, hidden_units=[300, 100], activation="relu")
    assert n_params(m) == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10 == 266_610
    assert isinstance(m.activation, nn.ReLU)
    x = torch.randn(4, 1, 28, 28)
    assert m(x).shape == (4, 10)
    # ReLU in the hidden layers: the output is a function of the clamped activations
    h = torch.relu(m.more_hidden[0](torch.relu(m.hidden_layer(x.flatten(1)))))
    assert torch.allclose(m(x), m.output_layer(h))


def test_glorot_uniform_init_is_keras_default():
    torch.manual_seed(0)
    m = MLP(1, 28, 10, hidden_units=[300, 100], init="glorot_uniform")
    for layer in (m.hidden_layer, m.more_hidden[0], m.output_layer):
        fan_out, fan_in = layer.weight.shape
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert float(layer.weight.detach().abs().max()) <= bound and float(layer.weight.detach().abs().max()) > 0.9 * bound
        assert torch.count_nonzero(layer.bias) == 0
    torch_default = MLP(1, 28, 10, hidden_units=[300, 100])
    assert torch.count_nonzero(torch_default.hidden_layer.bias) > 0


@pytest.mark.parametrize("bad", [dict(hidden_units=[]), dict(hidden_units=[300, 0]), dict(activation="swish"),
                                 dict(init="he")])
def test_mlp_refuses_bad_options(bad):
    with pytest.raises(ConfigError):
        MLP(1, 28, 10, **bad)
    args = {"hidden_units": 512, "activation": "tanh", "init": "torch", **bad}
    with pytest.raises(ConfigError):  # the schema's rules refuse it too, before anything is built
        signatures.of("labkit.models.MLP").check(args)


def test_lenet_alt_is_note_004s_network():
    m = LeNetAlt(1, 28, 10)
    assert n_params(m) == 61_706  # Keras' lenet_alt.summary() on 28x28x1
    conv1, conv2 = m.features[0], m.features[3]
    assert conv1.padding == (2, 2) and conv1.out_channels == 6 and conv2.out_channels == 16
    assert [type(x) for x in m.features] == [nn.Conv2d, nn.ReLU, nn.AvgPool2d, nn.Conv2d, nn.ReLU, nn.AvgPool2d]
    assert [type(x) for x in m.classifier] == [nn.Linear, nn.Sigmoid, nn.Linear, nn.Sigmoid, nn.Linear]
    assert m.classifier[0].in_features == 16 * 5 * 5
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    relu = LeNetAlt(1, 28, 10, head_activation="relu")
    assert [type(x) for x in relu.classifier][1::2][:2] == [nn.ReLU, nn.ReLU]
    assert n_params(relu) == 61_706
    with pytest.raises(ConfigError, match="head_activation"):
        LeNetAlt(head_activation="softmax")


def test_lenet_alt_derives_its_sizes_from_the_input():
    m = LeNetAlt(3, 32, 7)
    assert m.classifier[0].in_features == 16 * 6 * 6
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_mnist(root, folder="FashionMNIST", n_train=120, n_test=40, seed=3)
    return root


@pytest.mark.parametrize("preset", ["mlp_fashion_mnist", "lenet_fashion_mnist", "lenet_fashion_mnist_fast"])
def test_fashion_presets_compose_and_train_one_epoch(preset, cfg_factory, fashion_root):
    cfg = cfg_factory(f"experiment={preset}", "trainer.max_epochs=1", "logger=none", f"paths.data_dir={fashion_root}")
    assert cfg.data._target_.endswith("FashionMNISTDataModule")
    assert 0 < cfg.data.val_size < 1  # a fraction: fits the shared sample's 2,557 images
    if preset.endswith("_fast"):
        assert cfg.model.head_activation == "sigmoid" and cfg.data.augment
    else:  # the notes' Keras recipe
        assert cfg.data.batch_size == 32 and cfg.trainer.max_epochs == 1
        assert cfg.task.optimizer._target_ == "torch.optim.Adam" and cfg.task.optimizer.lr == 0.001
        assert cfg.task.optimizer.eps == 1e-7 and cfg.model.init == "glorot_uniform"
        assert cfg.callbacks.early_stopping.patience == 10 and cfg.callbacks.early_stopping.monitor == "val/loss"
        assert list(cfg.data.mean) == [0.0] and list(cfg.data.std) == [1.0]  # X / 255
    metrics = execute(cfg)
    assert metrics["status"] == "ok" and metrics["epochs"] == 1
    assert 0.0 <= metrics["test/acc"] <= 1.0
    config = (Path(cfg.paths.output_dir) / "config.yaml").read_text()
    target = "LeNetAlt" if "lenet" in preset else "MLP"
    assert f"labkit.models.{target}" in config
    assert json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["params"] == (
        61_706 if "lenet" in preset else 266_610)


def test_notes_presets_at_full_length_say_30_epochs(cfg_factory, fashion_root):
    for preset in ("mlp_fashion_mnist", "lenet_fashion_mnist"):
        cfg = cfg_factory(f"experiment={preset}", f"paths.data_dir={fashion_root}")
        assert cfg.trainer.max_epochs == 30 and cfg.expected["test/acc"] in (0.90, 0.896)


def test_mlp_options_from_the_command_line(cfg_factory, fashion_root):
    cfg = cfg_factory("model=mlp", "data=fashion_mnist", "model.hidden_units=[300,100]", "model.activation=relu",
                      f"paths.data_dir={fashion_root}", "data.val_size=0.2", "trainer.max_epochs=1", "logger=none")
    from hydra.utils import instantiate

    model = instantiate(cfg.model)
    assert n_params(model) == 266_610 and isinstance(model.activation, nn.ReLU)
    from hydra.errors import ConfigCompositionException

    with pytest.raises((ConfigCompositionException, ConfigError)):
        cfg_factory("model=mlp", "model.hidden=[300,100]")  # not a field of the schema


def test_the_training_count_is_read_from_the_idx_header(tmp_path):
    """MNIST-format modules know their training set's size from the labels file's 8-byte header (plain or .gz), so
    the pre-flight refuses a data.val_size that would take every image before any run folder exists."""
    import gzip

    from conftest import write_mnist

    from labkit.core.errors import ConfigError
    from labkit.data import FashionMNISTDataModule

    def module(**kw):
        return FashionMNISTDataModule(data_dir=str(tmp_path), **kw)

    assert module().training_count() is None  # no files yet: load() names what is missing
    raw = write_mnist(tmp_path, folder="FashionMNIST", n_train=37, n_test=5)
    assert module().training_count() == 37
    labels = raw / "train-labels-idx1-ubyte"
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels.read_bytes()))
    labels.unlink()
    assert module().training_count() == 37
    module(val_size=36).check_sizes()
    try:
        module(val_size=37).check_sizes()
    except ConfigError as e:
        assert "data.val_size=37 is invalid: it must be smaller than the 37 training images" in str(e)
    else:
        raise AssertionError("a hold-out of every training image was accepted")
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"not an idx file"))
    assert module().training_count() is None  # a damaged header: load() says what is wrong with the file
