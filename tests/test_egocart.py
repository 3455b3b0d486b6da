"""EgoCart: label parsing, pose similarity, caching, triplet training, localization metrics and report."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from labkit.core import files
from labkit.core.errors import DatasetNotFoundError
from labkit.data.egocart import EgoCartDataModule, read_labels, similar_pairs
from labkit.data.sampling import draw
from labkit.evaluation.localization import localization_errors


def write_egocart(root: Path, n_train: int = 48, n_test: int = 16, seed: int = 0, size=(40, 24)) -> Path:
    """The official layout with tiny JPEG frames: colours encode the pose (x, y, heading), label lines are
    ``<rgb name> <depth name> x y u v`` with (u, v) deliberately not of unit length."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    for split, n in (("train", n_train), ("test", n_test)):
        folder = root / f"{split}_set" / f"{split}_RGB"
        folder.mkdir(parents=True, exist_ok=True)
        xy = rng.uniform([0, 0], [2.0, 1.0], size=(n, 2))
        ang = rng.uniform(0, 2 * np.pi, size=n)
        lines = []
        for i in range(n):
            name = f"{split}_{i:04d}.jpg"
            img = np.zeros((h, w, 3), dtype=np.uint8)
            img[..., 0] = int(xy[i, 0] / 2.0 * 255)
            img[..., 1] = int(xy[i, 1] * 255)
            img[..., 2] = int(ang[i] / (2 * np.pi) * 255)
            img[: h // 2, : w // 2] = 255 - img[: h // 2, : w // 2]
            Image.fromarray(img).save(folder / name, quality=95)
            u, v = 3 * np.cos(ang[i]), 3 * np.sin(ang[i])
            lines.append(f"{name} {name[:-4]}.png {xy[i, 0]:.4f} {xy[i, 1]:.4f} {u:.6f} {v:.6f}")
        (root / f"{split}_set" / f"{split}_set.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def egocart_root(tmp_path) -> Path:
    return write_egocart(tmp_path / "data" / "egocart")


def _module(root: Path, **kw) -> EgoCartDataModule:
    kw.setdefault("cache_root", str(root.parent.parent / "cache"))  # <tmp>/cache, not ~/.cache
    kw.setdefault("image_size", 16)
    kw.setdefault("num_workers", 0)
    kw.setdefault("batch_size", 8)
    return EgoCartDataModule(data_dir=str(root.parent), **kw)


# ----- labels ------------------------------------------------------------------------------------
def test_labels_are_read_and_headings_normalized(egocart_root):
    names, poses = read_labels(egocart_root / "train_set" / "train_set.txt")
    assert len(names) == 48 and names[0] == "train_0000.jpg" and poses.shape == (48, 4)
    assert np.allclose(np.linalg.norm(poses[:, 2:], axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("bad, match", [("img.jpg img.png 1.0 2.0 0.5", "expected 6"),
                                        ("img.jpg img.png 1.0 north 0.5 0.5", "must be numbers"),
                                        ("img.jpg img.png 1.0 2.0 0 0", "non-zero")])
def test_malformed_label_line_names_file_and_line(egocart_root, bad, match):
    path = egocart_root / "train_set" / "train_set.txt"
    lines = path.read_text().splitlines()
    lines[2] = bad
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"train_set\.txt, line 3: .*{match}"):
        read_labels(path)


def test_missing_dataset_names_the_layout(tmp_path):
    data = EgoCartDataModule(data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError, match=r"train_set/train_set\.txt.*egocart\.zip"):
        data.setup()


# ----- similarity --------------------------------------------------------------------------------
def _brute_force(poses, dist, angle):
    d = np.linalg.norm(poses[:, None, :2] - poses[None, :, :2], axis=2)
    cos = np.clip((poses[:, None, 2:] * poses[None, :, 2:]).sum(2), -1, 1)
    sim = (d < dist) & (np.degrees(np.arccos(cos)) < angle)
    np.fill_diagonal(sim, False)
    i, j = np.nonzero(np.triu(sim))
    return set(zip(i.tolist(), j.tolist()))


@pytest.mark.parametrize("dist, angle", [(0.3, 45.0), (0.6, 90.0), (0.15, 20.0)])
def test_similar_pairs_match_brute_force(dist, angle):
    rng = np.random.default_rng(1)
    n = 400
    ang = rng.uniform(0, 2 * np.pi, n)
    poses = np.column_stack([rng.uniform(0, 3, n), rng.uniform(0, 2, n), np.cos(ang), np.sin(ang)])
    poses[1] = poses[0]                                   # a duplicate pose: similar, never to itself
    i, j = similar_pairs(poses, dist, angle)
    got = set(zip(i.tolist(), j.tolist()))
    assert got == _brute_force(poses, dist, angle)
    assert (0, 1) in got and len(got) > 20


def test_similarity_thresholds_are_strict():
    poses = np.array([[1.0, 1.0, 1, 0], [1.5, 1.0, 1, 0], [1.25, 1.0, 1, 0], [1.25, 1.0, 0, 1]])
    i, j = similar_pairs(poses, max_distance=0.5, max_angle=90.0)
    # 0-1 exactly 0.5 m apart, 3 exactly 90 degrees off the others: neither counts as similar
    assert set(zip(i.tolist(), j.tolist())) == {(0, 2), (1, 2)}


def test_module_similarity_and_triplets(egocart_root):
    data = _module(egocart_root, cache_resized=False)
    data.setup()
    sim = data.similarity("train")
    poses = data.poses("train")
    ref = _brute_force(poses.astype(np.float64), 0.3, 45.0)
    got = {(int(i), int(j)) for i in range(sim.n) for j in sim.neighbours(i) if i < j}
    assert got == ref and len(ref) > 0
    a, p, n = draw(sim, "triplets", seed=0).T
    assert (a != p).all() and sim.is_similar(a, p).all() and not sim.is_similar(a, n).any()
    assert set(a.tolist()) == {i for pair in ref for i in pair}  # exactly the frames that have a neighbour


# ----- images and cache --------------------------------------------------------------------------
def test_cache_matches_jpeg_decoding_and_is_reused(egocart_root):
    plain = _module(egocart_root, cache_resized=False)
    cached = _module(egocart_root, cache_resized=True)
    assert cached.input_shape == plain.input_shape == (3, 16, 26)  # 40x24 -> shorter side 16, as Resize(16)
    cached.prepare_data()
    cached.setup()
    assert not (egocart_root / ".labkit_cache").exists()  # nothing is written into the dataset folder
    files = sorted((egocart_root.parent.parent / "cache").glob("egocart-*/egocart_*_16x26_*.npy"))
    assert [f.name.split("_")[1] for f in files] == ["test", "train"]
    mtimes = [f.stat().st_mtime_ns for f in files]
    plain.setup()
    x_plain, pose_plain = next(iter(plain.loader("test")))
    x_cached, pose_cached = next(iter(cached.loader("test")))
    assert x_cached.dtype == torch.uint8 and x_cached.shape == (8, 3, 16, 26)
    assert torch.equal(x_plain, x_cached) and torch.equal(pose_plain, pose_cached)
    assert np.allclose(cached.poses("test")[:8], pose_cached.numpy())
    again = _module(egocart_root, cache_resized=True)
    again.setup()
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    fast = _module(egocart_root, cache_resized=False, fast_decode=True)
    assert next(iter(fast.loader("test")))[0].shape == (8, 3, 16, 26)
    square = _module(egocart_root, square=True, image_size=12)
    assert square.input_shape == (3, 12, 12)
    x = square.transform(next(iter(square.loader("train")))[0], train=False)
    assert x.dtype == torch.float32 and x.shape[1:] == (3, 12, 12)


def test_validation_defaults_to_the_test_set_or_a_holdout(egocart_root):
    data = _module(egocart_root, cache_resized=False)
    data.setup()
    assert data.splits["val"] is data.splits["test"]
    held = _module(egocart_root, cache_resized=False, val_size=8)
    held.setup()
    assert len(held.poses("train")) == 40 and len(held.poses("val")) == 8


# ----- localization ------------------------------------------------------------------------------
def test_localization_errors_by_hand():
    s = np.sqrt(0.5)
    true = np.array([[0, 0, 1, 0], [1, 1, 0, 1], [2, 0, 1, 0], [0, 5, -1, 0]], dtype=float)
    pred = np.array([[0.3, 0.4, 1, 0],      # 0.5 m, 0 deg
                     [1, 1, s, s],          # 0 m, 45 deg
                     [2, 3, 0, -2],         # 3 m, 90 deg (heading not unit: normalized)
                     [0, 6.5, 1, 0]],       # 1.5 m, 180 deg
                    dtype=float)
    e = localization_errors(pred, true)
    assert e["position_error_mean_m"] == pytest.approx((0.5 + 0 + 3 + 1.5) / 4)
    assert e["position_error_median_m"] == pytest.approx((0.5 + 1.5) / 2)
    assert e["orientation_error_mean_deg"] == pytest.approx((0 + 45 + 90 + 180) / 4)
    assert e["orientation_error_median_deg"] == pytest.approx((45 + 90) / 2)
    assert e["within_0.5m"] == pytest.approx(1 / 4)   # 0.5 m itself is not within 0.5 m
    assert e["within_1m"] == pytest.approx(2 / 4)
    assert e["within_2m"] == pytest.approx(3 / 4)


@pytest.mark.slow
def test_egocart_triplet_preset_trains_and_localizes(cfg_factory, tmp_path):
    from labkit.cli.evaluate import evaluate
    from labkit.run.lifecycle import execute

    write_egocart(tmp_path / "data" / "egocart")
    cfg = cfg_factory("experiment=egocart_triplet", "data.image_size=32", "data.num_workers=0",
                      "data.batch_size=8", "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1",
                      "logger=none")
    assert cfg.task.norm_penalty == 0.001 and cfg.task.margin == 2.0 and cfg.task.optimizer.lr == 0.001
    metrics = execute(cfg)
    assert metrics["status"] == "ok" and np.isfinite(metrics["test/loss"])
    ev = cfg_factory(f"run={cfg.paths.output_dir}", name="evaluate", sub="eval")
    rep = evaluate(ev)["retrieval"]  # a metric task's default report; on pose labels it is the localization one
    assert rep["gallery_samples"] == 48 and rep["query_samples"] == 16 and rep["features"] == 1280
    for prefix in ("", "baseline_rgb32_", "baseline_untrained_"):
        for key in ("position_error_mean_m", "position_error_median_m", "orientation_error_mean_deg",
                    "orientation_error_median_deg", "within_0.5m", "within_1m", "within_2m"):
            assert np.isfinite(rep[prefix + key])
    assert rep["baseline_untrained_init"].startswith("random init")
    assert rep["baseline_rgb32_features"] == 3 * 32 * 53
    # colours encode the pose on the toy frames: raw pixels localize far better than chance (about 0.8 m)
    assert rep["baseline_rgb32_position_error_mean_m"] < 0.5


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*configure_optimizers.*returned .None.")
def test_rgb_baseline_preset_runs_without_training(cfg_factory, tmp_path):
    from labkit.cli.evaluate import evaluate
    from labkit.run.lifecycle import execute

    write_egocart(tmp_path / "data" / "egocart")
    cfg = cfg_factory("experiment=egocart_rgb_baseline", "data.image_size=32", "data.num_workers=0",
                      "logger=none")
    assert execute(cfg)["status"] == "ok"
    rep = evaluate(cfg_factory(f"run={cfg.paths.output_dir}", "reports=[localization]", "baselines=false",
                               name="evaluate", sub="eval"))["localization"]
    assert rep["features"] == 3 * 32 * 53 and "baseline_rgb32_features" not in rep
    assert rep["position_error_mean_m"] < 0.5


# ----- file safety ---------------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_cache_is_never_unpickled_and_a_bad_one_is_named(egocart_root, tmp_path):
    from labkit.core.safe_load import CorruptFileError

    data = _module(egocart_root, cache_resized=True)
    path = data.cache_path("test")
    path.parent.mkdir(parents=True)
    marker = tmp_path / "pwned"
    np.save(path, np.array([_Payload(marker)], dtype=object), allow_pickle=True)  # a hostile "cache"
    data.build_cache("train")
    with pytest.raises(CorruptFileError, match=rf"{path}.*delete it"):
        data.setup()
    assert not marker.exists()
    np.save(path, np.zeros((3, 3, 16, 26), np.uint8))  # the wrong number of frames
    with pytest.raises(CorruptFileError, match=r"expected uint8 \(16, 3, 16, 26\)"):
        _module(egocart_root, cache_resized=True).setup()


def test_a_killed_cache_build_leaves_nothing_behind_for_the_next_run(egocart_root):

    data = _module(egocart_root, cache_resized=True)
    path = data.cache_path("train")
    path.parent.mkdir(parents=True)
    dead = f".{path.name}.999999999-{files._HOST}-0badcafe{files.TMP_SUFFIX}"  # no such pid
    (path.parent / dead).write_bytes(b"\0" * 1000)
    data.prepare_data()
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(data.cache_path(s).name for s in ("train", "test"))


def test_check_available_refuses_a_missing_or_partial_dataset_without_reading_it(tmp_path, egocart_root):
    """The pre-flight's check (issue 32): the missing files, where they go and how to get them; reads no data."""
    _module(egocart_root).check_available()  # all there
    with pytest.raises(DatasetNotFoundError) as e:
        EgoCartDataModule(data_dir=str(tmp_path / "nowhere")).check_available()
    where = (tmp_path / "nowhere" / "egocart").resolve()
    for phrase in (f"{where}/train_set/train_set.txt", f"{where}/test_set/test_RGB", "egocart.zip",
                   "iplab.dmi.unict.it", "unzip egocart.zip -d <data_dir>/egocart", "data.data_dir"):
        assert phrase in str(e.value), (phrase, str(e.value))
    import shutil

    shutil.rmtree(egocart_root / "test_set" / "test_RGB")
    with pytest.raises(DatasetNotFoundError, match=r"test_set/test_RGB missing") as e:
        _module(egocart_root).check_available()
    assert "train_set" not in str(e.value).split(" missing")[0]


def test_a_missing_egocart_folder_is_refused_before_the_run_folder_is_claimed(tmp_path, capsys):
    from labkit.cli.train import cli

    with pytest.raises(SystemExit) as exit_:
        cli([f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}", "data=egocart",
             "model=embedding_net", "task=triplet", "trainer.accelerator=cpu", "trainer.devices=1",
             "trainer.max_epochs=1", "logger=none"])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "EgoCart not found" in err and "egocart.zip" in err, err
    assert "Traceback" not in err and not (tmp_path / "logs").exists()  # the pre-flight: nothing was created
