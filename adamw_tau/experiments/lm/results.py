"""The LM sweep's results: its resumable CSV, the summary (best τ_epoch per size, the slope of
log best λ against log size, each width's best lr and the regret of transferring it) and the figure."""
from __future__ import annotations

import csv
import math
import os

import numpy as np

from .. import common
from .grid import COLUMNS, KEY, LMConfig, steps_per_epoch

# --- CSV ------------------------------------------------------------------------------------


def _fmt(v) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


def row_key(row: dict) -> tuple:
    return tuple(_fmt(row[k]) if k in ("lr", "tau_epochs") else str(row[k]) for k in KEY)


def read_rows(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("dataset_tokens", "width", "seed", "iters_per_epoch", "steps", "epochs", "corpus_bytes",
                  "corpus_files"):
            r[k] = int(r[k])
        for k in ("lr", "tau_epochs", "weight_decay", "train_loss", "val_loss", "seconds"):
            r[k] = float(r[k])
    return rows


def append_row(path: str, row: dict) -> None:
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            w.writeheader()
        w.writerow({k: _fmt(row[k]) if isinstance(row[k], float) else row[k] for k in COLUMNS})
        f.flush()
        os.fsync(f.fileno())


# --- analysis -------------------------------------------------------------------------------


def _mean_by(rows, keys, value="val_loss") -> dict:
    acc: dict = {}
    for r in rows:
        acc.setdefault(tuple(r[k] for k in keys), []).append(r[value])
    return {k: float(np.mean(v)) for k, v in acc.items()}


def summarize(rows: list[dict], cfg: LMConfig) -> dict:
    ds = [r for r in rows if r["experiment"] == "dataset"]
    mean = _mean_by([r for r in ds if r["mode"] == "tau"], ("dataset_tokens", "tau_epochs"))
    none = _mean_by([r for r in ds if r["mode"] == "none"], ("dataset_tokens",))
    seeds = {n: len({r["seed"] for r in ds if r["dataset_tokens"] == n}) for n in cfg.ds_sizes}
    best = []
    for n in cfg.ds_sizes:
        curve = [(t, mean.get((n, t), float("nan"))) for t in cfg.ds_taus]
        finite = [(t, v) for t, v in curve if math.isfinite(v)]
        if not finite:
            continue
        t_best, v_best = min(finite, key=lambda tv: tv[1])
        m = steps_per_epoch(n, cfg)
        edge = t_best in (finite[0][0], finite[-1][0])
        best.append(dict(dataset_tokens=n, tau_epochs=t_best, weight_decay=1.0 / (cfg.ds_lr * m * t_best), edge=edge,
                         val_loss=v_best, no_decay_val_loss=none.get((n,), float("nan")), seeds=seeds[n],
                         curve=curve))
    slope = float("nan")
    if len(best) >= 2:
        slope = float(np.polyfit(np.log([b["dataset_tokens"] for b in best]),
                                 np.log([b["weight_decay"] for b in best]), 1)[0])
    wd = [r for r in rows if r["experiment"] == "width"]
    wmean = _mean_by(wd, ("mode", "width", "lr"))
    width = {}
    for mode in ("lambda_fixed", "tau_fixed"):
        per = {}
        for w in cfg.w_widths:
            curve = [(lr, wmean.get((mode, w, lr), float("nan"))) for lr in cfg.w_lrs]
            finite = [(lr, v) for lr, v in curve if math.isfinite(v)]
            if finite:
                lr_b, v_b = min(finite, key=lambda lv: lv[1])
                per[w] = dict(best_lr=lr_b, best_val_loss=v_b, curve=curve,
                              edge=lr_b in (finite[0][0], finite[-1][0]))
        base = cfg.w_widths[0]
        if base in per:
            for w, d in per.items():
                at_base = dict(d["curve"]).get(per[base]["best_lr"], float("nan"))
                d["regret"] = at_base - d["best_val_loss"]
                d["regret_pct"] = 100.0 * d["regret"] / d["best_val_loss"]
        width[mode] = per
    return {"best": best, "slope": slope, "width": width}


def print_summary(s: dict, corpus_info: dict, cfg: LMConfig) -> None:
    print(f"sweep lm ({cfg.name}) on the stdlib corpus: {corpus_info['corpus_bytes']} bytes in "
          f"{corpus_info['corpus_files']} files, sha256 {corpus_info['corpus_sha256']}, {corpus_info['python']}")
    print(f"dataset: width {cfg.ds_width}, lr {cfg.ds_lr:g}, {cfg.ds_epochs} epochs; best τ_epoch per dataset size "
          "(val loss in nats/byte, mean over seeds)")
    for b in s["best"]:
        print(f"  N = {b['dataset_tokens']:9d} tokens  best τ_epoch {b['tau_epochs']:6.3g}  best λ {b['weight_decay']:8.3g}"
              f"  val {b['val_loss']:.4f}  (no decay {b['no_decay_val_loss']:.4f}; {b['seeds']} seeds)"
              + ("  [at the grid's edge]" if b["edge"] else ""))
    print(f"  slope of log best λ vs log N: {s['slope']:+.2f} (the rule predicts -1)")
    print(f"width: μP widths {', '.join(map(str, cfg.w_widths))}; best base lr per width, and the regret of "
          f"width {cfg.w_widths[0]}'s best lr")
    for mode, per in s["width"].items():
        cells = "  ".join(f"w{w}: {d['best_lr']:.2g}{'*' if d['edge'] else ''} ({d.get('regret_pct', float('nan')):+.1f}%)"
                          for w, d in per.items())
        print(f"  {mode:13s} {cells}")
    print("  (* = at the lr grid's edge; in parentheses: val loss at the base width's best lr over the width's best)")


def plot(s: dict, cfg: LMConfig, path: str, corpus_info: dict) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    a = axes[0, 0]
    for b in s["best"]:
        t, v = zip(*b["curve"])
        line, = a.plot(t, v, "o-", label=f"N = {b['dataset_tokens']:,}")
        if math.isfinite(b["no_decay_val_loss"]):
            a.axhline(b["no_decay_val_loss"], ls=":", color=line.get_color())
    a.set_xscale("log")
    a.set_xlabel("τ_epoch")
    a.set_ylabel("val loss (nats/byte)")
    a.set_title(f"dataset size, {cfg.ds_epochs} epochs (dotted: no decay)", fontsize=9)
    a.legend(fontsize=7)
    a = axes[0, 1]
    if s["best"]:
        ns = np.array([b["dataset_tokens"] for b in s["best"]], dtype=float)
        lam = np.array([b["weight_decay"] for b in s["best"]])
        a.loglog(ns, lam, "o-", label=f"best λ (slope {s['slope']:+.2f})")
        a.loglog(ns, lam[0] * ns[0] / ns, "k--", label="∝ 1/N (the rule)")
        a.legend(fontsize=7)
    a.set_xlabel("dataset size N (tokens)")
    a.set_ylabel("best λ (torch form)")
    for a, mode in zip(axes[1], ("lambda_fixed", "tau_fixed")):
        for w, d in s["width"].get(mode, {}).items():
            lrs, v = zip(*d["curve"])
            a.plot(lrs, v, "o-", label=f"width {w}")
        a.set_xscale("log")
        a.set_xlabel("base lr (μP-scaled per group)")
        a.set_ylabel("val loss (nats/byte)")
        a.set_title({"lambda_fixed": "λ fixed (torch form)", "tau_fixed": f"τ_epoch = {cfg.w_tau_epochs:g} fixed"}[mode],
                    fontsize=9)
        a.legend(fontsize=7)
    from matplotlib.ticker import NullFormatter
    for a in axes.flat:  # log axes: label the decades only, the minor labels collide
        a.xaxis.set_minor_formatter(NullFormatter())
        a.yaxis.set_minor_formatter(NullFormatter())
    fig.suptitle(f"sweep lm ({cfg.name}): stdlib corpus {corpus_info['corpus_bytes']:,} B, "
                 f"sha256 {corpus_info['corpus_sha256']}, {corpus_info['python']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

