"""What the sweeps share: a progress bar, geometric grids, CSV writing and a headless pyplot."""
from __future__ import annotations

import csv

import numpy as np


def progress_bar(total: int, desc: str, enabled: bool = True):
    try:
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, leave=False, disable=not enabled)
    except ImportError:  # pragma: no cover
        class _B:
            def update(self, n=1): pass
            def close(self): pass
        return _B()


def geom(lo: float, hi: float, n: int) -> list[float]:
    return [float(x) for x in np.geomspace(lo, hi, n)]


def write_csv(path: str, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
