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


def test_padded_crop_shifts_the_image_and_fills_black():
    x = torch.full((256, 1, 8, 8), 7, dtype=torch.uint8)
    padded = A.pad(x, 2)
    assert padded.shape == (256, 1, 12, 12) and padded[:, :, :2].eq(0).all() and padded[:, :, 2:10, 2:10].eq(7).all()
    torch.manual_seed(0)
    out = A.random_crop(padded, 8)
    black_rows = out.eq(0).all(-1).sum((1, 2))  # whole black rows: how far each image moved up or down
    assert black_rows.max() == 2 and black_rows.min() == 0 and out.eq(7).any((1, 2, 3)).all()
    assert A.pad(x, 0) is x


def test_random_erasing_one_rectangle_per_chosen_image():
    torch.manual_seed(0)
    x = torch.ones(400, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    out = A.random_erasing(x, p=0.5)
    assert out.is_contiguous(memory_format=torch.channels_last)  # in place, same layout
    erased = out.eq(0)
    assert erased.all(1).eq(erased.any(1)).all()  # every channel of a pixel together
    hit = erased.any((1, 2, 3))
    assert 0.38 < hit.float().mean() < 0.62  # about half the images
    area = erased[:, 0].sum((1, 2))[hit].float() / (16 * 16)
    assert area.min() >= 0.01 and area.max() <= 0.4  # 2-33% of the image, up to rounding
    for i in torch.nonzero(hit).flatten()[:20]:  # a rectangle: its bounding box is all erased
        rows, cols = torch.nonzero(erased[i, 0], as_tuple=True)
        assert erased[i, 0, rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
    assert A.random_erasing(torch.ones(4, 1, 8, 8), p=0.0).eq(1).all()


def test_batch_mix_gives_soft_labels_of_two_classes():
    from labkit.tasks.classification import batch_mix

    assert batch_mix(10, 0.0, 0.0) is None
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 8, 8), torch.arange(16) % 10
    for mix in (batch_mix(10, 0.2, 0.0), batch_mix(10, 0.0, 1.0), batch_mix(10, 0.2, 1.0)):
        xm, soft = mix(x.clone(), y)
        assert xm.shape == x.shape and soft.shape == (16, 10)
        assert torch.allclose(soft.sum(1), torch.ones(16)) and (soft > 0).sum(1).le(2).all()
        own = soft[torch.arange(16), y]
        assert own.gt(0).all() and torch.allclose(own, own[:1].expand(16))  # one mixing weight for the whole batch


def test_a_classifier_trains_on_padded_erased_mixed_batches(cfg_factory):
    """The recipe's pieces together (data.pad, data.erasing, task.mixup_alpha/cutmix_alpha) in a real training run:
    the loss is taken against soft labels, train/acc against the dominant label, and it learns."""
    from labkit.run.lifecycle import execute

    cfg = cfg_factory("data.augment=true", "data.pad=2", "data.erasing=0.5", "task.mixup_alpha=0.2",
                      "task.cutmix_alpha=1.0", "trainer.max_epochs=2", "logger=none", "data.batch_size=64")
    metrics = execute(cfg)
    assert metrics["status"] == "ok" and 0 <= metrics["train/acc"] <= 1
    assert metrics["test/acc"] > 0.3  # ten classes: chance is 0.1


def test_mixing_stops_at_mix_stop_epoch(cfg_factory, monkeypatch):
    """task.mix_stop_epoch=1: the first epoch trains on mixed batches, the second on clean ones (soft vs hard
    targets reach the loss)."""
    import torch.nn.functional as F

    from labkit.run.lifecycle import execute
    from labkit.tasks import classification

    seen = []
    real = F.cross_entropy

    def spy(logits, target, **kw):
        if logits.requires_grad:  # a training step
            seen.append(target.ndim)
        return real(logits, target, **kw)

    monkeypatch.setattr(classification.F, "cross_entropy", spy)
    cfg = cfg_factory("task.mixup_alpha=0.2", "task.mix_stop_epoch=1", "trainer.max_epochs=2", "logger=none",
                      "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "data.batch_size=64")
    assert execute(cfg)["status"] == "ok"
    assert seen == [2, 2, 2, 1, 1, 1]  # soft (N, classes) targets in epoch 0, class indices in epoch 1


def test_training_batches_are_augmented_and_evaluation_batches_are_not(cfg_factory, monkeypatch):
    """Lightning attaches the Trainer to the data module as ``trainer``: during fit every training batch goes
    through the augmenting transform (train=True: flip, padded crop, erasing), validation and test batches
    through the plain one. (The hook once looked for ``_trainer``, found none, and never augmented anything.)"""
    from labkit.data import memory
    from labkit.run.lifecycle import execute

    seen, crops = [], []
    real_transform, real_crop = memory.InMemoryImageDataModule.transform, A.random_crop

    def transform(self, x, train):
        seen.append(train)
        return real_transform(self, x, train)

    def crop(x, size, **kw):
        crops.append(tuple(x.shape[-2:]))
        return real_crop(x, size, **kw)

    monkeypatch.setattr(memory.InMemoryImageDataModule, "transform", transform)
    monkeypatch.setattr(A, "random_crop", crop)
    cfg = cfg_factory("data.augment=true", "data.pad=2", "data.erasing=0.5", "trainer.max_epochs=1",
                      "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "logger=none",
                      "trainer.num_sanity_val_steps=0")
    assert execute(cfg)["status"] == "ok"
    assert seen.count(True) == 3                 # the three training batches, augmented
    assert False in seen                         # validation and test batches, plain
    assert crops and set(crops) == {(32, 32)}    # 28x28 digits padded by 2 on every side, then cropped
