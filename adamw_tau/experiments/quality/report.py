"""The quality checks' outputs: CSV rows from dicts, and the loss-curve figure."""
from __future__ import annotations

import csv
import math
import textwrap

from .. import common


def format_value(x, spec: str) -> str:
    """``x`` in ``spec``, or an empty string for a missing number (None or nan)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return format(x, spec)


def _cell(x):
    if isinstance(x, float):
        return "" if math.isnan(x) else repr(x)  # repr: the float's exact decimal, read back the same
    return "" if x is None else x


def write_rows(path: str, columns: list[str], rows: list[dict]) -> None:
    """One line per dict, in ``columns`` order (a key a dict lacks is an empty cell)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in columns])


def read_rows(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot_curves(curves: dict[str, list[dict]], path: str, title: str, notes: list[str] = ()) -> None:
    """Left: the training loss (mean over each logged interval) against tokens; right: the
    validation points. ``notes`` (e.g. rows that failed) are printed under the axes."""
    plt = common.pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name, pts in curves.items():
        tr = [(p["tokens"] / 1e6, p["train_loss"]) for p in pts if not math.isnan(p["train_loss"])]
        va = [(p["tokens"] / 1e6, p["val_loss"]) for p in pts if not math.isnan(p["val_loss"])]
        if tr:
            a.plot(*zip(*tr), label=name, lw=1.2)
        if va:
            b.plot(*zip(*va), marker="o", ms=4, label=name, lw=1.2)
    for ax, what in ((a, "training loss (nats/byte)"), (b, "validation loss (nats/byte)")):
        ax.set_xlabel("tokens (millions)")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        if curves:
            ax.legend(fontsize=8)
    a.set_yscale("log")
    fig.suptitle(title, fontsize=10)
    lines = [w for n in notes for w in textwrap.wrap(n, 170)]
    if lines:
        fig.text(0.01, 0.01, "\n".join(lines), fontsize=7, va="bottom", family="monospace")
        fig.subplots_adjust(bottom=0.12 + 0.028 * len(lines))
    fig.savefig(path, dpi=110)
    plt.close(fig)
