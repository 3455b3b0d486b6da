"""predict.py: a new user's own image files (odd sizes and modes, written here) through a run trained here."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image, ImageDraw

from labkit.cli.evaluate import load_run
from labkit.cli.predict import NoInputsError, predict
from labkit.core.errors import LabkitError
from labkit.run.lifecycle import execute

FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
        "logger=none", "data.batch_size=64"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A small digits classifier trained for real (a few epochs: confident on most test digits)."""
    from conftest import make_cfg

    tmp = tmp_path_factory.mktemp("clf")
    cfg = make_cfg(["trainer.max_epochs=4", "logger=none"], tmp)
    execute(cfg)
    return Path(cfg.paths.output_dir)


def _rows(out_dir: Path) -> list[dict]:
    with open(out_dir / "predictions.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_classifier_predicts_user_images_through_the_runs_eval_transforms(digits_run, cfg_factory, tmp_path, capsys):
    saved, task, data, _ = load_run(digits_run)
    x_test, y_test = data.splits["test"].x, data.splits["test"].y
    with torch.no_grad():
        probs = torch.softmax(task.eval()(data.transform(x_test, train=False)), 1)
    conf, pred = probs.max(1)
    i = int(torch.nonzero((conf > 0.8) & (pred == y_test))[0])  # a digit the network knows well
    digit = x_test[i, 0].numpy()                                  # 28x28 uint8, white on black

    img = tmp_path / "imgs"
    (img / "sub").mkdir(parents=True)
    Image.fromarray(digit).save(img / "exact_grey.png")
    Image.fromarray(digit).convert("RGB").save(img / "exact_rgb.png")            # RGB -> grey
    Image.fromarray(255 - digit).save(img / "paper.png")                          # dark ink on white paper
    Image.fromarray(np.kron(digit, np.ones((3, 3), np.uint8))).resize((84, 84)).save(img / "big.jpg",
                                                                                        quality=95)
    la = Image.fromarray(np.stack([255 - digit, np.full_like(digit, 255)], -1))  # grey + alpha
    la.save(img / "sub" / "alpha.png")
    photo = Image.new("RGB", (61, 97), "white")                                        # odd size, portrait
    ImageDraw.Draw(photo).line([(30, 10), (30, 86)], fill=(20, 20, 20), width=9)
    photo.save(img / "sub" / "photo_of_a_one.jpg")
    Image.fromarray((digit.astype(np.uint16) * 257)).save(img / "sixteen_bit.png")
    (img / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (img / "notes.txt").write_text("not an image")  # ignored in a folder: not an image extension

    result = predict(cfg_factory(f"run={digits_run}", f"inputs={img}", "topk=3", name="predict", sub="p"))
    out = result["out_dir"]
    assert out.parent == digits_run / "predictions"
    assert (out / "predictions.png").stat().st_size > 2000
    rows = {Path(r["file"]).name: r for r in _rows(out)}
    assert set(rows) == {"exact_grey.png", "exact_rgb.png", "paper.png", "big.jpg", "alpha.png",
                         "photo_of_a_one.jpg", "sixteen_bit.png"}
    assert [Path(n).name for n, _ in result["skipped"]] == ["corrupt.png"]
    assert (out / "skipped.csv").exists()

    name = data.classes[int(y_test[i])]
    # the same pixels as the dataset's own test image: exactly the network's output on the test batch
    for f in ("exact_grey.png", "exact_rgb.png", "sixteen_bit.png"):
        assert rows[f]["prediction"] == name, rows[f]
        assert float(rows[f]["probability"]) == pytest.approx(float(conf[i]), abs=1e-4)
    # inverted (auto) and alpha-composited versions are the same digit again
    assert rows["paper.png"]["inverted"] == "True" and rows["exact_grey.png"]["inverted"] == "False"
    said = capsys.readouterr().out.split("(inverted:", 1)[-1]  # the note names the images it inverted, and no other
    assert "paper.png" in said and "exact_grey.png" not in said
    assert float(rows["paper.png"]["probability"]) == pytest.approx(float(conf[i]), abs=1e-4)
    assert rows["alpha.png"]["prediction"] == name
    assert rows["big.jpg"]["prediction"] == name
    for r in rows.values():
        ps = [float(r[f"p{k}"]) for k in (1, 2, 3)]
        assert ps == sorted(ps, reverse=True) and sum(ps) <= 1 + 1e-6
        assert len({r["top1"], r["top2"], r["top3"]}) == 3 and r["top1"] in data.classes


@pytest.mark.slow
def test_glob_list_and_errors(digits_run, cfg_factory, tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("L", (13, 300), 0).save(tmp_path / "a" / "thin.png")
    Image.new("RGB", (300, 13), (200, 10, 10)).save(tmp_path / "a" / "wide.jpeg")
    r = predict(cfg_factory(f"run={digits_run}", f"inputs={tmp_path / 'a'}/*.png", name="predict", sub="g"))
    assert [Path(x["file"]).name for x in r["rows"]] == ["thin.png"]
    r = predict(cfg_factory(f"run={digits_run}", f"inputs=[{tmp_path / 'a' / 'wide.jpeg'},{tmp_path / 'nope.png'}]",
                            name="predict", sub="l"))
    assert [Path(x["file"]).name for x in r["rows"]] == ["wide.jpeg"]
    assert r["skipped"][0][1] == "no such file or folder"

    ckpt = next((digits_run / "checkpoints").glob("epoch*.ckpt"))  # a checkpoint instead of the run directory
    r = predict(cfg_factory(f"run={ckpt}", f"inputs={tmp_path / 'a'}", name="predict", sub="c"))
    assert len(r["rows"]) == 2 and r["checkpoint"] == ckpt and r["out_dir"].parent == digits_run / "predictions"

    (tmp_path / "empty").mkdir()
    with pytest.raises(NoInputsError, match="gave no readable image") as e:
        predict(cfg_factory(f"run={digits_run}", f"inputs={tmp_path / 'empty'}", name="predict", sub="e"))
    assert isinstance(e.value, LabkitError)
    with pytest.raises(LabkitError, match="topk=0 is invalid"):
        predict(cfg_factory(f"run={digits_run}", f"inputs={tmp_path / 'a'}", "topk=0", name="predict", sub="t"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["siamese", "autoencoder"])
def test_embedding_neighbours_and_autoencoder_reconstructions(kind, cfg_factory, tmp_path):
    over = ["model=embedding_net", "task=siamese"] if kind == "siamese" else ["model=conv_autoencoder",
                                                                               "task=autoencoder"]
    cfg = cfg_factory(*over, *FAST, sub="train")
    execute(cfg)
    run = Path(cfg.paths.output_dir)
    img = tmp_path / "in.png"
    im = Image.new("L", (45, 31), 0)
    ImageDraw.Draw(im).ellipse([10, 3, 35, 28], outline=255, width=4)
    im.save(img)
    r = predict(cfg_factory(f"run={run}", f"inputs={img}", "k=4", name="predict", sub="p"))
    (row,) = _rows(r["out_dir"])
    assert (r["out_dir"] / "predictions.png").stat().st_size > 2000
    if kind == "siamese":
        assert r["kind"] == "embedding"
        names = [row[f"neighbour{j}"] for j in range(1, 5)]
        dists = [float(row[f"distance{j}"]) for j in range(1, 5)]
        assert all(n in [str(c) for c in range(10)] for n in names) and dists == sorted(dists)
        assert row["prediction"] in names
    else:
        assert r["kind"] == "autoencoder"
        assert float(row["reconstruction_error"]) > 0
        assert 0.0 <= float(row["test_images_with_higher_error"]) <= 1.0


@pytest.mark.slow
def test_predict_script_help_and_usage(digits_run, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    h = subprocess.run([sys.executable, str(ROOT / "predict.py"), "--help"], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=120)
    assert h.returncode == 0
    assert "inputs=" in h.stdout and "topk" in h.stdout and "Hydra" not in h.stdout and "--multirun" not in h.stdout
    u = subprocess.run([sys.executable, str(ROOT / "predict.py")], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=120)
    assert u.returncode != 0 and "Usage: python predict.py run=" in u.stderr and "Traceback" not in u.stderr
    Image.new("L", (28, 28), 0).save(tmp_path / "x.png")
    ok = subprocess.run([sys.executable, str(ROOT / "predict.py"), f"run={digits_run}",
                         f"inputs={tmp_path / 'x.png'}"], capture_output=True, text=True, env=env, cwd=tmp_path,
                        timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "x.png" in ok.stdout and "predictions written to" in ok.stdout
    assert "Traceback" not in ok.stderr and "Warning" not in ok.stderr


@pytest.mark.slow
def test_image_folder_run_names_its_classes_and_uses_its_torchvision_pipeline(cfg_factory, tmp_path):
    from test_folder_data import CLASSES, write_tree

    root = write_tree(tmp_path / "flowers", background=False, corrupt=False)
    cfg = cfg_factory("data=image_folder", f"data.root={root}", "data.num_classes=3", "data.resize=36",
                      "data.image_size=32", "data.num_workers=0", "data.batch_size=8", "model=lenet_color",
                      "trainer.max_epochs=1", "logger=none", sub="train")
    execute(cfg)
    run = Path(cfg.paths.output_dir)
    grey = tmp_path / "grey_odd.png"  # a grey image for an RGB network, not square, not the training size
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (51, 77), dtype=np.uint8)).save(grey)
    # fit=crop: exactly the data module's evaluation pipeline (the default, pad, first pads the photo to a square)
    r = predict(cfg_factory(f"run={run}", f"inputs={grey}", "topk=3", "fit=crop", name="predict", sub="p"))
    (row,) = r["rows"]
    assert {row["top1"], row["top2"], row["top3"]} == set(CLASSES)  # class names, not indices
    _, task, data, _ = load_run(run)
    x = data.image_transform(train=False)(Image.open(grey).convert("RGB"))[None]
    assert x.shape == (1, 3, 32, 32)
    with torch.no_grad():
        p = torch.softmax(task.eval()(x), 1)[0]
    assert row["prediction"] == CLASSES[int(p.argmax())]
    assert row["probability"] == pytest.approx(float(p.max()), abs=1e-5)


@pytest.mark.slow
def test_a_tall_photo_keeps_its_top_in_what_the_network_sees(digits_run, cfg_factory, tmp_path):
    """A 137x211 photo of a '7' (dark on white): fit=pad keeps its top bar, fit=crop (the datasets' way) cuts it."""
    from labkit.cli.predict import preprocess

    img = Image.new("L", (137, 211), 255)
    draw = ImageDraw.Draw(img)
    draw.rectangle((10, 0, 127, 25), fill=0)  # the top bar, in the first rows
    draw.line((120, 25, 50, 210), fill=0, width=18)
    _, _, data, _ = load_run(digits_run)
    padded, inverted = preprocess([img], data, "auto", "pad")
    cropped, _ = preprocess([img], data, "auto", "crop")
    assert inverted == [True]  # white paper -> MNIST-like white digit on black
    background = padded[0, 0, :, 0].min()
    bar = lambda x: (x[0, 0, :8] > background + 1.0).float().mean()  # noqa: E731  bright pixels in the top rows
    assert bar(padded) > 0.1 and bar(cropped) < bar(padded) / 2
    assert padded[0, 0, :, :2].std() < 1e-3  # the pad has the photo's own background (after inversion)
    photo = tmp_path / "seven.png"
    img.save(photo)
    r = predict(cfg_factory(f"run={digits_run}", f"inputs={photo}", name="predict", sub="tall"))
    shown = np.asarray(Image.open(r["out_dir"] / "predictions.png"))
    assert shown.size > 0  # the grid shows the network's 28x28 view (checked in preprocess above)


def test_a_glob_that_matches_nothing_is_refused_before_torch_is_imported(tmp_path):
    code = ("import sys, runpy; sys.argv = ['predict.py', 'run=/no/run', 'inputs=" + str(tmp_path) + "/*.png']\n"
            "try:\n    runpy.run_path('predict.py', run_name='__main__')\n"
            "except SystemExit as e:\n    print('torch imported:', 'torch' in sys.modules, 'code:', e.code)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert "torch imported: False code: 1" in r.stdout, r.stdout + r.stderr
    assert "the pattern matches no file" in r.stderr and "Traceback" not in r.stderr
