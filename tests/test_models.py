import pytest
import torch

from labkit.core.errors import IncompatibleError
from labkit.models import MLP, LeNet, LeNetColor, LeNetV2, MiniAlexNet, MiniAlexNetV2, MiniAlexNetV3, MiniAlexNetV4
from labkit.models._shape import count_parameters


def conv(cin, cout, k):
    return cin * cout * k * k + cout


def fc(i, o):
    return i * o + o


def test_lenet_parameter_count_matches_note_001():
    # C1 6x(1x5x5+1), C3 16x(6x5x5+1), F5 256->120, F6 120->84, F7 84->10
    expected = conv(1, 6, 5) + conv(6, 16, 5) + fc(256, 120) + fc(120, 84) + fc(84, 10)
    assert expected == 44426
    assert count_parameters(LeNet(1, 28, 10)) == expected
    assert count_parameters(LeNetV2(1, 28, 10)) == expected


def test_lenet_structure():
    m = LeNet()
    assert isinstance(m.features[1], torch.nn.AvgPool2d) and isinstance(m.features[2], torch.nn.Tanh)
    m2 = LeNetV2()
    assert isinstance(m2.features[1], torch.nn.MaxPool2d) and isinstance(m2.features[2], torch.nn.ReLU)


def test_mlp_784_512_10():
    m = MLP(1, 28, 10)
    assert count_parameters(m) == fc(784, 512) + fc(512, 10)
    assert isinstance(m.activation, torch.nn.Tanh)


def test_lenet_color_counts():
    expected = conv(3, 18, 5) + conv(18, 28, 5) + fc(700, 360) + fc(360, 252) + fc(252, 100)
    assert count_parameters(LeNetColor(3, 32, 100)) == expected


def _alex_convs(c=3):
    return conv(c, 16, 5) + conv(16, 32, 5) + conv(32, 64, 3) + conv(64, 128, 3) + conv(128, 256, 3)


def test_minialexnet_counts_at_notes_sizes():
    v1 = _alex_convs() + fc(4096, 2048) + fc(2048, 1024) + fc(1024, 100)
    assert count_parameters(MiniAlexNet(3, 32, 100)) == v1
    assert count_parameters(MiniAlexNetV2(3, 32, 100)) == v1  # dropout has no parameters
    v3 = _alex_convs() + fc(2304, 2048) + fc(2048, 1024) + fc(1024, 100)
    assert count_parameters(MiniAlexNetV3(3, 28, 100)) == v3
    bn = 2 * (16 + 32 + 64 + 128) + 2 * (2304 + 2048 + 1024)
    assert count_parameters(MiniAlexNetV4(3, 28, 100)) == v3 + bn


@pytest.mark.parametrize("size", [28, 32])
def test_minialexnet_v4_runs_at_28_and_32(size):
    m = MiniAlexNetV4(3, size, 10).eval()
    assert m(torch.zeros(2, 3, size, size)).shape == (2, 10)


def test_lenet_on_cifar_shape():
    assert LeNet(3, 32, 100)(torch.zeros(2, 3, 32, 32)).shape == (2, 100)


def test_too_small_input_names_model_shape_and_need():
    with pytest.raises(IncompatibleError) as e:
        LeNet(1, 12, 10)
    msg = str(e.value)
    assert "lenet" in msg and "1x12x12" in msg and "16x16" in msg
    with pytest.raises(IncompatibleError, match="minialexnet_v4.*at least 8x8"):
        MiniAlexNetV4(3, 4, 10)
