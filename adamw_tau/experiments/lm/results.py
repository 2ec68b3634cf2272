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


def _best_tau(curve) -> tuple | None:
    finite = [(t, v) for t, v in curve if math.isfinite(v)]
    if not finite:
        return None
    t_best, v_best = min(finite, key=lambda tv: tv[1])
    rest = [v for t, v in finite if t != t_best]
    return t_best, v_best, t_best in (finite[0][0], finite[-1][0]), (min(rest) - v_best) if rest else float("nan")


def _slope(ns, lams) -> float:
    if len(ns) < 2:
        return float("nan")
    return float(np.polyfit(np.log(ns), np.log(lams), 1)[0])


def _dataset(rows, cfg: LMConfig) -> dict:
    ds = [r for r in rows if r["experiment"] == "dataset"]
    tau_rows = [r for r in ds if r["mode"] == "tau"]
    mean = _mean_by(tau_rows, ("dataset_tokens", "tau_epochs"))
    none = _mean_by([r for r in ds if r["mode"] == "none"], ("dataset_tokens",))
    seeds = {n: len({r["seed"] for r in ds if r["dataset_tokens"] == n}) for n in cfg.ds_sizes}
    # seed-to-seed spread: the std over seeds of each (size, τ) cell's val loss
    cells: dict = {}
    for r in tau_rows:
        cells.setdefault((r["dataset_tokens"], r["tau_epochs"]), []).append(r["val_loss"])
    std = {k: float(np.std(v, ddof=1)) for k, v in cells.items() if len(v) >= 2 and all(map(math.isfinite, v))}
    best = []
    for n in cfg.ds_sizes:
        curve = [(t, mean.get((n, t), float("nan"))) for t in cfg.ds_taus]
        found = _best_tau(curve)
        if found is None:
            continue
        t_best, v_best, edge, margin = found
        best.append(dict(dataset_tokens=n, tau_epochs=t_best, weight_decay=1.0 / (cfg.ds_lr * steps_per_epoch(n, cfg) * t_best),
                         edge=edge, val_loss=v_best, no_decay_val_loss=none.get((n,), float("nan")), seeds=seeds[n],
                         curve=curve, margin=margin, seed_std=std.get((n, t_best), float("nan"))))
    slope = _slope([b["dataset_tokens"] for b in best], [b["weight_decay"] for b in best])
    per_seed = []  # each seed's own best τ per size, and its slope
    for seed in sorted({r["seed"] for r in tau_rows}):
        one = {(r["dataset_tokens"], r["tau_epochs"]): r["val_loss"] for r in tau_rows if r["seed"] == seed}
        pts = []
        for n in cfg.ds_sizes:
            found = _best_tau([(t, one.get((n, t), float("nan"))) for t in cfg.ds_taus])
            if found is not None:
                pts.append((n, 1.0 / (cfg.ds_lr * steps_per_epoch(n, cfg) * found[0]), found[0]))
        per_seed.append(dict(seed=seed, taus=[p[2] for p in pts], slope=_slope([p[0] for p in pts], [p[1] for p in pts])))
    return dict(best=best, slope=slope, slope_seeds=per_seed, cell_std=std)


def _width(rows, cfg: LMConfig) -> dict:
    wd = [r for r in rows if r["experiment"] == "width"]
    base = cfg.w_widths[0]
    width = {}
    for mode in ("lambda_fixed", "tau_fixed"):
        per = {}
        seeds = sorted({r["seed"] for r in wd if r["mode"] == mode})
        by_seed = {s: _mean_by([r for r in wd if r["mode"] == mode and r["seed"] == s], ("width", "lr")) for s in seeds}
        wmean = _mean_by([r for r in wd if r["mode"] == mode], ("width", "lr"))
        for w in cfg.w_widths:
            curve = [(lr, wmean.get((w, lr), float("nan"))) for lr in cfg.w_lrs]
            finite = [(lr, v) for lr, v in curve if math.isfinite(v)]
            if finite:
                lr_b, v_b = min(finite, key=lambda lv: lv[1])
                per[w] = dict(best_lr=lr_b, best_val_loss=v_b, curve=curve,
                              edge=lr_b in (finite[0][0], finite[-1][0]))
        if base in per:
            for w, d in per.items():
                at_base = dict(d["curve"]).get(per[base]["best_lr"], float("nan"))
                d["regret"] = at_base - d["best_val_loss"]
                d["regret_pct"] = 100.0 * d["regret"] / d["best_val_loss"]
                regrets = []  # the same regret within each seed: its spread
                for s in seeds:
                    m = by_seed[s]
                    bc = [(lr, m.get((base, lr), float("nan"))) for lr in cfg.w_lrs]
                    wc = [(lr, m.get((w, lr), float("nan"))) for lr in cfg.w_lrs]
                    if all(math.isfinite(v) for _, v in bc) and any(math.isfinite(v) for _, v in wc):
                        lr_base = min(bc, key=lambda lv: lv[1])[0]
                        v_best = min(v for _, v in wc if math.isfinite(v))
                        regrets.append(100.0 * (dict(wc)[lr_base] - v_best) / v_best)
                d["regret_pct_seeds"] = regrets
        width[mode] = per
    cells: dict = {}
    for r in wd:
        cells.setdefault((r["mode"], r["width"], r["lr"]), []).append(r["val_loss"])
    std = {k: float(np.std(v, ddof=1)) for k, v in cells.items() if len(v) >= 2 and all(map(math.isfinite, v))}
    return width, std


def summarize(rows: list[dict], cfg: LMConfig) -> dict:
    width, std = _width(rows, cfg)
    return {**_dataset(rows, cfg), "width": width, "width_cell_std": std}


def print_summary(s: dict, corpus_info: dict, cfg: LMConfig) -> None:
    print(f"sweep lm ({cfg.name}) on the stdlib corpus: {corpus_info['corpus_bytes']} bytes in "
          f"{corpus_info['corpus_files']} files, sha256 {corpus_info['corpus_sha256']}, {corpus_info['python']}")
    print(f"dataset: width {cfg.ds_width}, lr {cfg.ds_lr:g}, {cfg.ds_epochs} epochs; best τ_epoch per dataset size "
          "(val loss in nats/byte, mean over seeds)")
    for b in s["best"]:
        print(f"  N = {b['dataset_tokens']:9d} tokens  best τ_epoch {b['tau_epochs']:6.3g}  best λ {b['weight_decay']:8.3g}"
              f"  val {b['val_loss']:.4f}  (no decay {b['no_decay_val_loss']:.4f}; {b['seeds']} seeds)"
              + ("  [at the grid's edge]" if b["edge"] else ""))
        print("      val by τ_epoch: " + "  ".join(f"{t:g}: {v:.4f}" for t, v in b["curve"]))
        if b["seeds"] >= 2:
            print(f"      next-best τ_epoch is {b['margin']:.4f} worse; seed-to-seed std at the best τ_epoch {b['seed_std']:.4f}")
    print(f"  slope of log best λ vs log N: {s['slope']:+.2f} (the rule predicts -1)")
    if len(s["slope_seeds"]) >= 2:
        sl = [p["slope"] for p in s["slope_seeds"]]
        print("  per seed: " + "; ".join(f"seed {p['seed']}: best τ_epoch {', '.join(f'{t:g}' for t in p['taus'])}, slope "
                                          f"{p['slope']:+.2f}" for p in s["slope_seeds"]))
        print(f"  slope across seeds: mean {np.mean(sl):+.2f}, std {np.std(sl, ddof=1):.2f}")
    if s["cell_std"]:
        v = list(s["cell_std"].values())
        print(f"  seed-to-seed std of val loss over the (N, τ_epoch) cells: median {np.median(v):.4f}, max {max(v):.4f}")
    print(f"width: μP widths {', '.join(map(str, cfg.w_widths))}; best base lr per width, and the regret of "
          f"width {cfg.w_widths[0]}'s best lr")
    for mode, per in s["width"].items():
        cells = "  ".join(f"w{w}: {d['best_lr']:.2g}{'*' if d['edge'] else ''} ({d.get('regret_pct', float('nan')):+.1f}%)"
                          for w, d in per.items())
        print(f"  {mode:13s} {cells}")
        print(f"  {'':13s} best val loss: " + "  ".join(f"w{w}: {d['best_val_loss']:.4f}" for w, d in per.items()))
        spread = [(w, d["regret_pct_seeds"]) for w, d in per.items() if len(d.get("regret_pct_seeds", [])) >= 2]
        if spread:
            print(f"  {'':13s} regret per seed: " + "  ".join(f"w{w}: " + "/".join(f"{x:+.1f}" for x in r) + "%"
                                                          for w, r in spread))
    print("  (* = at the lr grid's edge; in parentheses: val loss at the base width's best lr over the width's best)")
    if s["width_cell_std"]:
        v = list(s["width_cell_std"].values())
        print(f"  seed-to-seed std of val loss over the (mode, width, lr) cells: median {np.median(v):.4f}, max {max(v):.4f}")


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

