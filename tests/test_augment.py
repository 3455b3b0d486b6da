import torch

from labkit.data import augment as A


def test_random_crop_takes_real_windows():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    torch.manual_seed(0)
    out = A.random_crop(x, 4)
    assert out.shape == (2, 1, 4, 4)
    for i in range(2):
        windows = [x[i, :, t:t + 4, l:l + 4] for t in range(3) for l in range(3)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_random_crop_varies_per_sample():
    x = torch.arange(64 * 32 * 32).view(64, 1, 32, 32).float() % 1000
    torch.manual_seed(1)
    out = A.random_crop(x, 28)
    offsets = {(int(out[i, 0, 0, 0]) - int(x[i, 0, 0, 0])) for i in range(64)}
    assert len(offsets) > 1


def test_center_crop_and_hflip():
    x = torch.arange(16).view(1, 1, 4, 4)
    assert torch.equal(A.center_crop(x, 2), x[..., 1:3, 1:3])
    assert torch.equal(A.random_hflip(x, p=1.0), x.flip(-1))
    assert torch.equal(A.random_hflip(x, p=0.0), x)


def test_normalize_and_identity_jitter():
    x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    f = A.to_float(x)
    assert torch.allclose(f, torch.ones_like(f))
    y = A.normalize(f, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    assert torch.allclose(y, torch.full_like(y, 2.0))
    assert torch.equal(A.color_jitter(f), f)  # the notes' ColorJitter() with no arguments changes nothing
    j = A.color_jitter(torch.rand(8, 3, 4, 4), brightness=0.5, contrast=0.5, saturation=0.5)
    assert j.min() >= 0 and j.max() <= 1
