"""torchvision model zoo: head replacement per family, kept weights, offline pretrained weights."""
from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
from omegaconf import OmegaConf

from labkit.core.errors import ConfigError, IncompatibleError, WeightsNotFoundError
from labkit.models import zoo
from labkit.models.build import build_model
from labkit.run.validate import check_keys

CONF = Path(__file__).resolve().parents[1] / "conf"

# family -> (input size used here, head name, head type)
FAMILIES = {
    "alexnet": (64, "classifier.6", torch.nn.Linear),
    "vgg16": (32, "classifier.6", torch.nn.Linear),
    "googlenet": (32, "fc", torch.nn.Linear),
    "resnet18": (32, "fc", torch.nn.Linear),
    "resnet34": (32, "fc", torch.nn.Linear),
    "resnet50": (32, "fc", torch.nn.Linear),
    "squeezenet1_0": (32, "classifier.1", torch.nn.Conv2d),
    "mobilenet_v2": (32, "classifier.1", torch.nn.Linear),
}


# the four largest networks take seconds each on the CPU: the full run builds them, the fast tier the other four
HEAVY = ("googlenet", "vgg16", "resnet34", "resnet50")


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in HEAVY else a for a in FAMILIES])
def test_adapted_model_shape_and_kept_weights(arch):
    size, head, head_type = FAMILIES[arch]
    torch.manual_seed(0)
    model = getattr(zoo, arch)(num_classes=7, in_channels=3, image_size=size)
    torch.manual_seed(0)
    reference = getattr(tvm, arch)(**dict(zoo.FAMILIES[arch].kwargs))  # the unadapted 1000-class network
    assert model.labkit_head == head == zoo.head_name(model)
    assert isinstance(model.get_submodule(head), head_type)
    assert model.num_classes == 7
    ours, theirs = model.state_dict(), reference.state_dict()
    head_keys = set(zoo.head_parameter_names(model))
    assert head_keys == {f"{head}.weight", f"{head}.bias"}
    assert set(ours) == set(theirs)
    for k, v in theirs.items():
        if k in head_keys:
            assert ours[k].shape[0] == 7 and v.shape[0] == 1000
        else:
            assert torch.equal(ours[k], v), k
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 3, size, size))
        assert isinstance(out, torch.Tensor) and out.shape == (2, 7)
        if arch == "googlenet":  # no auxiliary outputs: a plain tensor in training mode too
            out = model.train()(torch.randn(2, 3, size, size))
            assert isinstance(out, torch.Tensor) and out.shape == (2, 7)


def test_other_input_channels_rebuild_the_first_convolution():
    model = zoo.resnet18(num_classes=3, in_channels=1, image_size=32).eval()
    assert model.conv1.in_channels == 1
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)


def test_too_small_input_and_bad_arguments():
    with pytest.raises(IncompatibleError, match="at least 63x63"):
        zoo.alexnet(num_classes=3, image_size=32)
    with pytest.raises(ConfigError, match="model.num_classes"):
        zoo.resnet18(num_classes=0)
    with pytest.raises(ConfigError, match="IMAGENET1K_V1"):
        zoo.resnet18(num_classes=3, pretrained="nonsense")


def test_model_configs(cfg_factory):
    for arch in FAMILIES:
        node = OmegaConf.load(CONF / "model" / f"{arch}.yaml")
        assert list(node.defaults) == [f"/schema/model/{arch}@_here_", "_self_"]  # typed by its schema
        del node["defaults"]  # (Hydra's, not an argument)
        assert node._target_ == f"labkit.models.zoo.{arch}" and node.pretrained is False
        assert OmegaConf.to_container(node)["num_classes"] == "${data.num_classes}"
        check_keys(node, "model")  # every key is an argument of the builder
    cfg = cfg_factory("model=squeezenet1_0", "data=cifar10")
    assert cfg.model.num_classes == 10 and cfg.model.in_channels == 3 and cfg.model.image_size == 28
    model = build_model(cfg.model)
    assert model.eval()(torch.randn(2, 3, 28, 28)).shape == (2, 10)


def _offline(monkeypatch):
    """No network: every download attempt fails at once (URLError), as it does on this machine."""
    def fail(url, *args, **kwargs):
        raise urllib.error.URLError("no internet (simulated)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)


def test_missing_pretrained_weights_offline_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _offline(monkeypatch)
    with pytest.raises(WeightsNotFoundError) as exc:
        zoo.squeezenet1_0(num_classes=5, pretrained=True)
    msg = str(exc.value)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    assert "squeezenet1_0-b66bff10.pth" in msg
    assert str(cache) in msg
    assert "https://download.pytorch.org/models/squeezenet1_0-b66bff10.pth" in msg
    assert "model.pretrained=false" in msg


def test_pretrained_weights_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _offline(monkeypatch)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(123)
    imagenet = tvm.squeezenet1_0()  # stands in for the ImageNet weights: same names and shapes
    # torchvision passes check_hash=True, but torch.hub only checks the hash while downloading: a cached
    # file is loaded as it is
    torch.save(imagenet.state_dict(), cache / zoo.weights_file(tvm.SqueezeNet1_0_Weights.IMAGENET1K_V1))
    torch.manual_seed(0)
    model = zoo.squeezenet1_0(num_classes=5, pretrained=True)
    ours, src = model.state_dict(), imagenet.state_dict()
    for k, v in src.items():
        if k.startswith("classifier.1."):
            assert ours[k].shape[0] == 5
        else:
            assert torch.equal(ours[k], v), k
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_unreadable_cached_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _offline(monkeypatch)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "resnet18-f37072fd.pth").write_bytes(b"truncated download")
    with pytest.raises(WeightsNotFoundError, match="cannot be loaded.*delete the file"):
        zoo.resnet18(num_classes=3, pretrained=True)
