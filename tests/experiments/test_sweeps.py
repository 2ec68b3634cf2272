"""The --quick sweeps: their files exist, their numbers are finite, their grids have the stated shape."""
import csv
import math

import numpy as np
import pytest

from adamw_tau import cli
from adamw_tau.experiments import linear_sweeps, width_sweep


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # full tier: 51 CPU s measured
def test_sweep_ridge_quick(tmp_path, capsys):
    assert cli.main(["sweep", "ridge", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    rows = _rows(tmp_path / "ridge.csv")
    # 7 lrs; the torch form's lambda axis has the lr axis's step over 1e-3..1e3 (10 values)
    assert len(rows) == 2 * 7 * (10 + 7 + 7)
    for r in rows:
        runnable = r["form"] != "torch" or float(r["lr"]) * float(r["decay_axis"]) <= 1.0
        assert math.isfinite(float(r["val_loss"])) == runnable, r
    assert (tmp_path / "ridge.png").stat().st_size > 10_000
    assert "valley" in capsys.readouterr().out


@pytest.mark.slow  # full tier: 12 CPU s measured
def test_sweep_dataset_quick(tmp_path):
    r = linear_sweeps.sweep_dataset(str(tmp_path), quick=True, progress=False)
    rows = _rows(tmp_path / "dataset.csv")
    assert len(rows) == 3 * 6
    assert len(r["best"]) == 3 and all(math.isfinite(b[2]) for b in r["best"])
    assert (tmp_path / "dataset.png").exists()


@pytest.mark.slow  # full tier: 77 CPU s measured
def test_sweep_width_quick(tmp_path):
    width_sweep.sweep_width(str(tmp_path), quick=True, progress=False)
    rows = _rows(tmp_path / "width.csv")
    assert len(rows) == 2 * 3 * 5
    assert sum(math.isfinite(float(r["val_loss"])) for r in rows) >= len(rows) - 2
    assert (tmp_path / "width.png").exists()


def test_valley_slope_reads_the_valley():
    lrs = np.geomspace(1e-3, 1, 5)
    lam = np.geomspace(1e-3, 1, 7)
    diag = np.array([[abs(np.log(lr * x) - np.log(1e-3)) + 1 for x in lam] for lr in lrs])
    flat = np.array([[abs(np.log(x) - np.log(1e-2)) + 1 for x in lam] for _ in lrs])
    assert linear_sweeps.valley_slope(diag, lrs, lam)[0] == pytest.approx(-1, abs=0.1)
    assert linear_sweeps.valley_slope(flat, lrs, lam)[0] == pytest.approx(0, abs=0.05)
    assert math.isnan(linear_sweeps.valley_slope(np.ones((5, 7)), lrs, lam)[0])  # decay never matters
