"""Metric learning: contrastive loss, pair/triplet sampling, siamese/triplet tasks, retrieval report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_cifar

from labkit.core.errors import IncompatibleError
from labkit.data.sampling import (
    ClassSimilarity,
    NeighbourSimilarity,
    TupleBatchSampler,
    draw,
    sample_pairs,
    sample_triplets,
)
from labkit.evaluation.embed import extract
from labkit.evaluation.retrieval import Penultimate, retrieval_metrics
from labkit.models.embedding import EmbeddingClassifier, EmbeddingNet
from labkit.tasks.metric import SiameseTask, TripletTask, contrastive_loss


# ----- loss --------------------------------------------------------------------------------------
def test_contrastive_loss_matches_the_formula_by_hand():
    phi_i = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    phi_j = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 0])  # similar, dissimilar, dissimilar, similar
    # d = 5, 1, 5, 0 -> 1/2 * 25 = 12.5 ; 1/2 * (2 - 1)^2 = 0.5 ; 1/2 * max(0, 2 - 5)^2 = 0 ; 0
    assert contrastive_loss(phi_i, phi_j, labels, margin=2.0).item() == pytest.approx((12.5 + 0.5 + 0 + 0) / 4,
                                                                                     abs=1e-5)
    # margin 6: the third pair now costs 1/2 * (6 - 5)^2 = 0.5 and the second 1/2 * 25 = 12.5
    assert contrastive_loss(phi_i, phi_j, labels, margin=6.0).item() == pytest.approx((12.5 + 12.5 + 0.5) / 4,
                                                                                     abs=1e-5)


# ----- sampling ----------------------------------------------------------------------------------
def _labels():
    # unbalanced classes and a class with a single sample (label 7)
    return np.array([0] * 50 + [1] * 30 + [2] * 19 + [7] + [3] * 2)


def test_pairs_satisfy_their_labels_and_are_balanced():
    y = _labels()
    rows = draw(ClassSimilarity(y), "pairs", seed=0, epoch=0)
    i, j, l = rows.T
    assert (i == np.arange(len(y))).all()                 # every sample once as the first element
    assert (i != j).all()                                 # never paired with itself
    assert ((y[i] == y[j]) == (l == 0)).all()             # 0 = similar, 1 = dissimilar
    assert abs((l == 0).mean() - 0.5) <= 0.02             # balanced (the singleton's pair must be dissimilar)
    assert l[y == 7].tolist() == [1]
    big = draw(ClassSimilarity(np.random.default_rng(1).integers(0, 10, 5000)), "pairs", seed=3)
    assert abs((big[:, 2] == 0).mean() - 0.5) < 0.01


def test_triplets_satisfy_their_constraints():
    y = _labels()
    a, p, n = draw(ClassSimilarity(y), "triplets", seed=0).T
    assert set(a.tolist()) == set(np.flatnonzero(y != 7).tolist())   # the singleton has no positive: no triplet
    assert (a != p).all() and (y[a] == y[p]).all() and (y[a] != y[n]).all()
    # a positive is drawn among all the other samples of the class: the class of two always gets its partner
    two = np.flatnonzero(y == 3)
    assert {int(p[a == two[0]][0]), int(p[a == two[1]][0])} == {int(two[1]), int(two[0])}


def test_draws_are_seeded_and_change_with_epoch_and_seed():
    sim = ClassSimilarity(_labels())
    for mode in ("pairs", "triplets"):
        base = draw(sim, mode, seed=0, epoch=0)
        assert np.array_equal(base, draw(sim, mode, seed=0, epoch=0))
        assert not np.array_equal(base, draw(sim, mode, seed=0, epoch=1))
        assert not np.array_equal(base, draw(sim, mode, seed=1, epoch=0))


def test_positives_cover_the_class_uniformly():
    y = np.array([0, 0, 0, 0, 1, 1])
    sim = ClassSimilarity(y)
    seen = np.concatenate([sim.positives(np.zeros(2000, dtype=np.int64), np.random.default_rng(s)) for s in range(2)])
    counts = np.bincount(seen, minlength=6)
    assert counts[0] == 0 and counts[4:].sum() == 0
    assert counts[1:4].min() > 1100                      # about 4000 / 3 each


def test_sampling_sixty_thousand_labels():
    y = np.random.default_rng(0).integers(0, 10, 60_000)
    sim = ClassSimilarity(y)
    pairs, triplets = draw(sim, "pairs", 0, 5), draw(sim, "triplets", 0, 5)
    assert pairs.shape == (60_000, 3) and triplets.shape == (60_000, 3)
    assert ((y[pairs[:, 0]] == y[pairs[:, 1]]) == (pairs[:, 2] == 0)).all()


def test_impossible_tuples_raise():
    with pytest.raises(IncompatibleError, match="dissimilar"):
        sample_pairs(ClassSimilarity(np.zeros(5, dtype=int)), np.random.default_rng(0))
    with pytest.raises(IncompatibleError, match="triplets"):
        sample_triplets(ClassSimilarity(np.arange(5)), np.random.default_rng(0))


def test_neighbour_similarity_tuples():
    # a chain 0-1-2-3 of similar samples, 4 and 5 without neighbours
    sim = NeighbourSimilarity.from_pairs(6, np.array([0, 1, 2, 2]), np.array([1, 2, 3, 3]))
    assert sim.neighbours(2).tolist() == [1, 3]
    a, p, n = draw(sim, "triplets", seed=0).T
    assert a.tolist() == [0, 1, 2, 3]
    assert sim.is_similar(a, p).all() and not sim.is_similar(a, n).any() and (a != n).all()
    i, j, l = draw(sim, "pairs", seed=0).T
    assert (i != j).all() and (sim.is_similar(i, j) == (l == 0)).all()
    assert (l[[4, 5]] == 1).all()


def test_sampler_follows_set_epoch():
    sim = ClassSimilarity(_labels())
    s = TupleBatchSampler(sim, "triplets", batch_size=16, seed=0)
    first = np.concatenate(list(s))
    assert len(s) == -(-len(first) // 16) and np.array_equal(np.concatenate(list(s)), first)
    s.set_epoch(1)
    assert not np.array_equal(np.concatenate(list(s)), first)
    shards = [list(TupleBatchSampler(sim, "triplets", batch_size=16, seed=0, num_replicas=2, rank=r)) for r in (0, 1)]
    s.set_epoch(0)
    for whole, half0, half1 in zip(s, *shards):  # DDP: every rank takes its share of each global batch
        assert np.array_equal(whole, np.concatenate([half0, half1]))
    fixed = TupleBatchSampler(sim, "pairs", batch_size=16, seed=0, shuffle=False, resample=False)
    a = np.concatenate(list(fixed))
    fixed.set_epoch(3)
    assert np.array_equal(a, np.concatenate(list(fixed)))


def test_in_memory_module_yields_transformed_pairs_and_triplets(cfg_factory):
    from hydra.utils import instantiate

    data = instantiate(cfg_factory("data=digits").data)
    data.sampling = "pairs"
    data.setup()
    x1, x2, l, y1, y2 = data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)
    assert x1.dtype == torch.float32 and x1.shape == x2.shape == (data.batch_size, 1, 28, 28)
    assert ((y1 == y2) == (l == 0)).all()
    data.sampling = "triplets"
    batch = data.on_after_batch_transfer(next(iter(data.val_dataloader())), 0)
    assert len(batch) == 6 and all(b.dtype == torch.float32 for b in batch[:3])
    assert (batch[3] == batch[4]).all() and (batch[3] != batch[5]).all()
    x, y = next(iter(data.loader("test")))
    assert x.dtype == torch.uint8 and len(x) == len(y)


def _epoch_tuples(data, epoch: int) -> np.ndarray:
    sampler = data.train_dataloader().sampler  # labkit.data.sampling.TupleBatchSampler
    sampler.set_epoch(epoch)  # what Lightning calls at every epoch start
    return np.unique(np.concatenate(list(sampler)), axis=0)  # the epoch's (i, j, label) rows, order aside


@pytest.mark.parametrize("resample", [True, False])
def test_resample_tuples_switches_between_new_and_reused_draws(cfg_factory, resample):
    """data.resample_tuples=false (the notes' presets) trains on one draw of pairs every epoch, reshuffled."""
    from hydra.utils import instantiate

    data = instantiate(cfg_factory("data=digits", f"data.resample_tuples={str(resample).lower()}").data)
    data.sampling = "pairs"
    data.setup()
    first, second = _epoch_tuples(data, 0), _epoch_tuples(data, 1)
    assert first.shape == second.shape
    assert np.array_equal(first, second) is (not resample)


def test_notes_presets_reuse_their_tuples_and_fast_presets_redraw(cfg_factory):
    for preset, resample in (("siamese_mnist", False), ("triplet_mnist", False), ("siamese_mnist_fast", True),
                             ("triplet_mnist_fast", True)):
        assert cfg_factory(f"experiment={preset}").data.resample_tuples is resample, preset


@pytest.mark.parametrize("value", ["sometimes", "1"])
def test_resample_tuples_must_be_a_boolean(cfg_factory, value):
    """The schema's bool field refuses a word while composing; the constructor refuses any non-boolean it is given."""
    from hydra.errors import ConfigCompositionException

    from labkit.core.errors import ConfigError
    from labkit.data.vision import DigitsDataModule

    if value == "sometimes":
        with pytest.raises(ConfigCompositionException, match="resample_tuples"):
            cfg_factory("data=digits", f"data.resample_tuples={value}")
    with pytest.raises(ConfigError, match=f"data.resample_tuples=.*{value}.* must be true or false"):
        DigitsDataModule(resample_tuples=value)


# ----- models and tasks --------------------------------------------------------------------------
def test_embedding_net_is_the_notes_network():
    net = EmbeddingNet()
    assert sum(p.numel() for p in net.parameters()) == 350_016  # "350 K" in the notes' model summary
    assert net.fc[1].in_features == 1024
    assert net(torch.zeros(16, 1, 28, 28)).shape == (16, 128)
    assert EmbeddingNet(3, 32, embedding_size=64)(torch.zeros(2, 3, 32, 32)).shape == (2, 64)
    clf = EmbeddingClassifier(num_classes=10)
    names = set(clf.state_dict())
    assert set(net.state_dict()) <= names and names - set(net.state_dict()) == {"classifier.weight",
                                                                                 "classifier.bias"}
    assert clf(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


class _Data:
    name, label_kind, sampling, input_shape = "toy", "class", "single", (1, 28, 28)


def test_task_needs_vector_outputs():
    conv = {"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3}
    with pytest.raises(IncompatibleError, match="one vector per image"):
        SiameseTask(conv).check_compatible(_Data())
    data = _Data()
    SiameseTask({"_target_": "labkit.models.classic.LeNet"}).check_compatible(data)  # 10 logits: an embedding
    assert data.sampling == "pairs"


def test_miner_needs_class_labels():
    task = TripletTask({"_target_": "labkit.models.embedding.EmbeddingNet"}, miner="batch_hard")
    assert task.sampling == "single"
    data = _Data()
    task.check_compatible(data)
    assert data.sampling == "single"
    data.label_kind = "pose"
    with pytest.raises(IncompatibleError, match="class labels"):
        task.check_compatible(data)


def _score(task, data) -> dict:
    gallery, g_y = extract(task.embed, data, "train", module=task)
    queries, q_y = extract(task.embed, data, "test", module=task)
    return retrieval_metrics(gallery, g_y, queries, q_y)


@pytest.mark.slow
def test_siamese_training_on_digits_improves_retrieval(cfg_factory):
    import pytorch_lightning as pl

    from labkit.cli.evaluate import load_task
    from labkit.run.lifecycle import build, execute
    from labkit.run.plan import make

    overrides = ("task=siamese", "model=embedding_net", "data=digits", "trainer.max_epochs=2", "logger=none",
                 "task/optimizer=adam", "task.optimizer.lr=0.001", "test=false")
    cfg = cfg_factory(*overrides)
    pl.seed_everything(cfg.seed)
    data, untrained, _ = build(make(cfg))  # the same initial weights as the run's
    data.sampling = "single"
    before = _score(untrained, data)
    metrics = execute(cfg)
    assert metrics["status"] == "ok" and metrics["val/dist_neg"] > metrics["val/dist_pos"]
    trained = load_task(Path(cfg.paths.output_dir) / metrics["last_checkpoint"], cfg.task._target_)
    after = _score(trained, data)
    assert after["precision_at_1"] > before["precision_at_1"]
    assert after["map_at_r"] > before["map_at_r"] + 0.1


@pytest.mark.slow
def test_triplet_on_cifar10_fast_dev_run(cfg_factory, tmp_path):
    from labkit.run.lifecycle import execute

    write_cifar(tmp_path / "data", 10)
    metrics = execute(cfg_factory("task=triplet", "data=cifar10", "trainer.fast_dev_run=true", "data.batch_size=16",
                                "data.val_size=20"))
    assert metrics["status"] == "ok" and "test/loss" in metrics and "test/triplet_acc" in metrics


@pytest.mark.slow
def test_triplet_with_miner_and_norm_penalty(cfg_factory):
    from labkit.run.lifecycle import execute

    metrics = execute(cfg_factory("task=triplet", "data=digits", "task/loss=pml_triplet_margin", "task/miner=semi_hard",
                                "task.norm_penalty=0.001", "trainer.fast_dev_run=true"))
    assert metrics["status"] == "ok" and np.isfinite(metrics["test/loss"])


@pytest.mark.slow
def test_projector_gets_the_first_validation_batch(cfg_factory):
    from labkit.run.lifecycle import execute

    cfg = cfg_factory("task=siamese", "data=digits", "trainer.max_epochs=1", "task.projector=20", "test=false")
    execute(cfg)
    tb = Path(cfg.paths.output_dir) / "tensorboard"
    assert (tb / "projector_config.pbtxt").exists()
    meta = next(tb.rglob("metadata.tsv")).read_text().split()
    assert len(meta) == 20 and set(meta) <= {str(i) for i in range(10)}
    assert next(tb.rglob("sprite.png")).stat().st_size > 0


# ----- retrieval metrics and report --------------------------------------------------------------
def test_map_at_r_by_hand():
    gallery = np.array([[0.0], [1.0], [2.0], [3.0], [10.0], [11.0]], dtype=np.float32)
    g_y = np.array([0, 0, 1, 0, 1, 1])
    queries = np.array([[0.4], [2.2], [50.0]], dtype=np.float32)
    q_y = np.array([0, 1, 5])  # class 5 is not in the gallery
    m = retrieval_metrics(gallery, g_y, queries, q_y)
    # query 0 (R = 3): neighbours 0 (A), 1 (A), 2 (B) -> AP@R = (1/1 + 2/2) / 3 = 2/3, R-precision 2/3
    # query 1 (R = 3): neighbours 2 (B), 3 (A), 1 (A) -> AP@R = (1/1) / 3 = 1/3, R-precision 1/3
    assert m["map_at_r"] == pytest.approx(0.5)
    assert m["r_precision"] == pytest.approx(0.5)
    assert m["precision_at_1"] == pytest.approx(2 / 3)  # the third query cannot be right
    assert m["queries_without_class_in_gallery"] == 1


def _hand_retrieval_metrics(gallery, gallery_labels, queries, query_labels) -> dict:
    """labkit's own computation before retrieval_metrics asked PML's AccuracyCalculator (kept as the reference)."""
    from labkit.evaluation.embed import nearest

    classes, counts = np.unique(gallery_labels, return_counts=True)
    pos = np.clip(np.searchsorted(classes, query_labels), 0, len(classes) - 1)
    r = np.where(classes[pos] == query_labels, counts[pos], 0)
    k = min(int(max(1, r.max())), len(gallery))
    _, idx = nearest(gallery, queries, k)
    ranks = np.arange(1, k + 1)
    rel = gallery_labels[idx] == query_labels[:, None]
    rel &= ranks[None, :] <= r[:, None]
    safe, valid = np.maximum(r, 1), r > 0
    ap = (np.cumsum(rel, 1) / ranks * rel).sum(1) / safe
    return {"precision_at_1": float(rel[:, 0].mean()), "r_precision": float((rel.sum(1) / safe)[valid].mean()),
            "map_at_r": float(ap[valid].mean()), "queries_without_class_in_gallery": int((~valid).sum())}


@pytest.mark.parametrize("budget", [None, 500])
def test_retrieval_figures_from_pml_equal_labkits_own(monkeypatch, budget):
    """retrieval_metrics asks PML's AccuracyCalculator: the same figures as labkit's former hand computation, on a
    fixed embedding set (digits' pixels and noisy class clusters, with a query class absent from the gallery), also
    when the queries are searched in chunks."""
    from sklearn.datasets import load_digits

    from labkit.evaluation import retrieval

    if budget:
        monkeypatch.setattr(retrieval, "SEARCH_BUDGET", budget)  # chunks of a few queries
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    pixels = (x + rng.normal(scale=1e-3, size=x.shape)).astype(np.float32)  # no exact distance ties
    g_y, q_y = rng.integers(0, 5, 300), np.r_[rng.integers(0, 5, 97), [9, 9, 9]]
    clusters = [(rng.normal(size=(n, 8)) + labels[:, None] * 0.7).astype(np.float32)
                for n, labels in ((300, g_y), (100, q_y))]
    sets = [(pixels[:1200], y[:1200], pixels[1200:], y[1200:]), (clusters[0], g_y, clusters[1], q_y)]
    for gallery, gy, queries, qy in sets:
        new, old = retrieval_metrics(gallery, gy, queries, qy), _hand_retrieval_metrics(gallery, gy, queries, qy)
        assert new.keys() == old.keys()
        for key in old:
            assert new[key] == pytest.approx(old[key], abs=1e-6), key
    assert retrieval_metrics(*sets[1])["queries_without_class_in_gallery"] == 3


def test_penultimate_features_of_a_classifier():
    from labkit.models.classic import LeNet

    pen = Penultimate(LeNet())
    assert pen.layer_name == "classifier.4" and pen(torch.zeros(3, 1, 28, 28)).shape == (3, 84)


@pytest.mark.slow
def test_retrieval_report_on_a_classification_run(cfg_factory):
    from labkit.cli.evaluate import evaluate
    from labkit.run.lifecycle import execute

    cfg = cfg_factory("data=digits", "trainer.max_epochs=1", "logger=none")
    execute(cfg)
    ev = cfg_factory(f"run={cfg.paths.output_dir}", "reports=[classification,retrieval]", "tsne_samples=100",
                     "knn_k=5", name="evaluate", sub="eval")
    results = evaluate(ev)
    rep = results["retrieval"]
    for key in ("nn1_accuracy", "knn_accuracy", "precision_at_1", "r_precision", "map_at_r", "tsne_png"):
        assert key in rep
    assert rep["embedding_dim"] == 84 and "penultimate" in rep["embedding"] and rep["knn_k"] == 5
    assert 0.0 <= rep["map_at_r"] <= 1.0 and (Path(cfg.paths.output_dir) / rep["tsne_png"]).stat().st_size > 0
    saved = json.loads((Path(cfg.paths.output_dir) / "evaluation" / "test" / "report.json").read_text())
    assert {"classification", "retrieval"} <= set(saved)


@pytest.mark.slow
def test_siamese_run_evaluates_retrieval_by_default(cfg_factory):
    from labkit.cli.evaluate import evaluate
    from labkit.run.lifecycle import execute

    cfg = cfg_factory("task=siamese", "model=embedding_net", "data=digits", "trainer.max_epochs=1", "logger=none")
    execute(cfg)
    results = evaluate(cfg_factory(f"run={cfg.paths.output_dir}", "tsne_samples=0", name="evaluate", sub="eval"))
    assert set(results) >= {"retrieval"} and "classification" not in results
    assert results["retrieval"]["embedding_dim"] == 128 and "SiameseTask.embed" in results["retrieval"]["embedding"]


@pytest.mark.slow
def test_embedding_classifier_starts_from_a_siamese_run(cfg_factory):
    from labkit.cli.evaluate import load_task
    from labkit.run.lifecycle import build, execute
    from labkit.run.plan import make

    cfg = cfg_factory("task=siamese", "model=embedding_net", "data=digits", "trainer.max_epochs=1",
                      "logger=none", "test=false")
    ckpt = Path(cfg.paths.output_dir) / execute(cfg)["last_checkpoint"]
    _, clf, _ = build(make(cfg_factory("model=embedding_classifier", f"init_from={ckpt}", "data=digits",
                                       sub="clf")))
    siamese = load_task(ckpt, cfg.task._target_).model
    for name, tensor in siamese.state_dict().items():
        assert torch.equal(clf.model.state_dict()[name], tensor), name
    assert clf.model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.slow
def test_metric_runs_record_retrieval_figures_that_evaluate_reproduces(cfg_factory):
    from labkit.cli.evaluate import evaluate
    from labkit.run.lifecycle import execute

    cfg = cfg_factory("task=triplet", "model=embedding_net", "data=digits", "trainer.max_epochs=1", "logger=none",
                      "trainer.limit_train_batches=3")
    metrics = execute(cfg)
    for key in ("retrieval/precision_at_1", "retrieval/map_at_r", "retrieval/pixels_precision_at_1"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["retrieval/map_at_r"] == \
        pytest.approx(metrics["retrieval/map_at_r"])
    report = evaluate(cfg_factory(f"run={cfg.paths.output_dir}", "reports=[retrieval]", "tsne_samples=0",
                                  name="evaluate", sub="ev"))["retrieval"]
    assert report["precision_at_1"] == pytest.approx(metrics["retrieval/precision_at_1"], abs=1e-6)
    assert report["map_at_r"] == pytest.approx(metrics["retrieval/map_at_r"], abs=1e-6)
