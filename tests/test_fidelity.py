"""benchmarks/fidelity.py keeps running: every row, --quick, on tiny files in the genuine formats written here."""
import json
import sys

import pytest

from conftest import ROOT, write_cifar, write_mnist

sys.path.insert(0, str(ROOT))
from benchmarks import fidelity  # noqa: E402


def test_quick_fidelity_runs_every_row_side_by_side(tmp_path, capsys):
    data = tmp_path / "data"
    write_mnist(data, n_train=200, n_test=100)
    write_cifar(data, 10, n_train=100, n_test=50)
    out = tmp_path / "fidelity.json"
    rc = fidelity.main(["--data-dir", str(data), "--quick", "--threads", "1", "--json", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["row"] for r in rows] == list(fidelity.ROWS)
    for r in rows:
        assert r["epochs"] == 1
        assert 0.0 <= r["notes"] <= 1.0 and 0.0 <= r["labkit"] <= 1.0
        assert r["difference"] == pytest.approx(r["labkit"] - r["notes"])
        assert r["pass"] == (abs(r["difference"]) <= fidelity.TOLERANCE + 1e-9)
    by = {r["row"]: r for r in rows}
    # the notes' loop trains on labkit's training split: 90% of the files' training images
    assert by["lenet"]["train_images"] == 180 and by["minialexnet_v4"]["train_images"] == 90
    for name in ("sparse_ae", "siamese", "triplet"):
        assert 0.0 < by[name]["pixels"] <= 1.0  # the raw-pixel baseline on the same gallery
    table = capsys.readouterr().out
    for name in fidelity.ROWS:
        assert any(line.startswith(name) and ("PASS" in line or "FAIL" in line) for line in table.splitlines())


def test_unknown_row_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        fidelity.main(["--data-dir", str(tmp_path), "--rows", "lenet,alexnet"])
