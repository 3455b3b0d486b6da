"""export.py: the network with its normalization folded in, reloaded (onnxruntime for ONNX) and compared."""
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, make_cfg

from labkit.cli.evaluate import load_run
from labkit.cli.export import MissingExtraError, export
from labkit.core.errors import ConfigError
from labkit.run.lifecycle import execute

FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=1", "logger=none"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exp")
    cfg = make_cfg(FAST, tmp)
    execute(cfg)
    return Path(cfg.paths.output_dir)


def _raw_test_pixels(run):
    """The run's test images as a user has them (0-1 pixels, no normalization) and PyTorch's logits on them
    through the run's own pipeline."""
    _, task, data, _ = load_run(run)
    x = data.splits["test"].x[:50]
    with torch.no_grad():
        logits = task.eval()(data.transform(x, train=False))
    return (x.float() / 255.0).numpy(), logits.numpy(), data


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
def test_export_folds_normalization_and_matches_pytorch(fmt, digits_run, cfg_factory):
    record = export(cfg_factory(f"run={digits_run}", f"format={fmt}", name="export", sub=fmt))
    path = Path(record["path"])
    assert path.parent == digits_run / "export" and path.stat().st_size > 10_000
    saved = json.loads((path.parent / f"{fmt}.json").read_text())
    assert saved["path"] == f"export/{path.name}" and saved["run"] == digits_run.name  # relative: the run can move
    assert not Path(saved["checkpoint"]).is_absolute()
    assert saved["check"]["max_abs_difference"] <= saved["check"]["tolerance"] < 1e-2
    assert saved["input"]["shape"] == ["N", 1, 28, 28] and saved["classes"] == [str(i) for i in range(10)]

    pixels, logits, data = _raw_test_pixels(digits_run)
    assert not np.allclose(data.mean, 0.0)  # the folding below is a real one
    if fmt == "onnx":
        import onnxruntime as ort

        out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"pixels": pixels})[0]
    elif fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; still what many deployments use
            out = torch.jit.load(str(path))(torch.from_numpy(pixels)).detach().numpy()
    else:
        out = torch.export.load(str(path)).module()(torch.from_numpy(pixels)).detach().numpy()
    assert out.shape == (50, 10)  # a batch size other than the traced one
    np.testing.assert_allclose(out, logits, atol=1e-4, rtol=1e-3)


@pytest.mark.slow
def test_autoencoder_exports_pixels_to_pixels(cfg_factory):
    cfg = cfg_factory("model=conv_autoencoder", "task=autoencoder", *FAST, sub="ae")
    execute(cfg)
    run = Path(cfg.paths.output_dir)
    record = export(cfg_factory(f"run={run}", "format=onnx", "check_images=16", name="export", sub="aex"))
    assert record["kind"] == "autoencoder" and record["output"]["shape"] == ["N", 1, 28, 28]
    import onnxruntime as ort

    _, task, data, _ = load_run(run)
    x = data.splits["test"].x[:8]
    with torch.no_grad():
        xn = data.transform(x, train=False)
        ref = task.eval().model(xn) * torch.tensor(data.std).view(1, -1, 1, 1) + torch.tensor(data.mean).view(
            1, -1, 1, 1)
    out = ort.InferenceSession(record["path"]).run(None, {"pixels": (x.float() / 255).numpy()})[0]
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-4, rtol=1e-3)


def test_clear_errors(digits_run, cfg_factory, monkeypatch):
    with pytest.raises(ConfigError, match="format='tflite' is invalid"):
        export(cfg_factory(f"run={digits_run}", "format=tflite", name="export", sub="bad"))
    with pytest.raises(ConfigError, match="opset=0 is invalid"):
        export(cfg_factory(f"run={digits_run}", "format=onnx", "opset=0", name="export", sub="bad"))
    # an opset the exporter cannot convert this network to: refused after the attempt, and no file is left
    def listing():
        return sorted((p.name, p.stat().st_mtime_ns) for p in (digits_run / "export").glob("*")) \
            if (digits_run / "export").is_dir() else []

    before = listing()
    with pytest.raises(ConfigError, match=r"opset=3 is not available: .* wrote opset \d+ .*no file was written"):
        export(cfg_factory(f"run={digits_run}", "format=onnx", "opset=3", name="export", sub="old"))
    assert listing() == before
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the extra were not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'labkit\[export\]'"):
        export(cfg_factory(f"run={digits_run}", "format=onnx", name="export", sub="noextra"))


@pytest.mark.slow
def test_export_script(digits_run, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(ROOT / "export.py"), f"run={digits_run}", "format=torchscript",
                        f"out_dir={tmp_path / 'out'}"], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "torch.jit.load(" in r.stdout and "max |difference|" in r.stdout
    assert (tmp_path / "out" / "model.torchscript.pt").exists()
    assert "Warning" not in r.stderr and "Traceback" not in r.stderr
    u = subprocess.run([sys.executable, str(ROOT / "export.py")], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=120)
    assert u.returncode != 0 and "Usage: python export.py run=" in u.stderr and "Traceback" not in u.stderr


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_the_printed_snippet_loads_the_model_without_any_warning(fmt, digits_run, cfg_factory, capsys, tmp_path):
    """Issue 21: the TorchScript snippet triggered `torch.jit.load is deprecated`; every snippet runs with warnings as
    errors, and the TorchScript one names torch's recommended replacement (format=pt2, torch.export.load)."""
    export(cfg_factory(f"run={digits_run}", f"format={fmt}", name="export", sub=f"snippet_{fmt}"))
    printed = capsys.readouterr().out
    after = printed.split("load it:\n", 1)[1].splitlines()
    code = "\n".join(line[2:] for line in after if line.startswith("  "))
    if fmt == "torchscript":
        assert "torch.jit.load(" in code and "format=pt2" in printed and "torch.export.load" in printed
    script = tmp_path / "load.py"
    script.write_text(f"import torch\nimages = torch.rand(3, 1, 28, 28)\n{code}\nprint(tuple(output.shape))\n")
    r = subprocess.run([sys.executable, "-W", "error", str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(3, 10)" and "Warning" not in r.stderr
