"""The fair LM test's analysis: optima interpolated in log τ (or log lr), the slope of log best λ
against log N with a seed-bootstrap interval, the n-gram baseline beside each size, and the figure."""
from __future__ import annotations

import math

import numpy as np

from .. import common
from . import ngram
from .fair import iters_per_epoch, predictions, tau_window

# --- interpolation and bootstrap --------------------------------------------------------------


def interp_optimum(xs, ys) -> dict:
    """The minimum of ys over xs (positive, increasing), interpolated in log x by the parabola through
    the best point and its two neighbours. At the grid's edge the optimum is not bracketed: ``x`` is
    then the edge point and ``edge`` says which side ("low"/"high"), the true optimum lying beyond."""
    xs = np.asarray(xs, dtype=float)
    ys = np.asarray(ys, dtype=float)
    keep = np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    if xs.size == 0:
        raise ValueError("no finite losses to interpolate")
    if np.any(np.diff(xs) <= 0) or np.any(xs <= 0):
        raise ValueError(f"grid points must be positive and increasing, got {xs.tolist()}")
    i = int(np.argmin(ys))
    if i == 0 or i == xs.size - 1:
        return {"x": float(xs[i]), "y": float(ys[i]), "edge": "low" if i == 0 else "high"}
    lx = np.log(xs[i - 1:i + 2])
    y = ys[i - 1:i + 2]
    a, b, c = np.polyfit(lx, y, 2)
    if a <= 0:  # three equal values: no curvature, the grid point stands
        return {"x": float(xs[i]), "y": float(ys[i]), "edge": None}
    v = float(np.clip(-b / (2 * a), lx[0], lx[2]))
    return {"x": float(math.exp(v)), "y": float(a * v * v + b * v + c), "edge": None}


def fit_slope(xs, ys) -> float:
    """Least-squares slope of log y against log x."""
    if len(xs) < 2:
        return float("nan")
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)[0])


def best_lambda(tau_epochs: float, lr: float, m_iters: int) -> float:
    """Torch-form λ = 1 / (η · M · τ_epoch)."""
    return 1.0 / (lr * m_iters * tau_epochs)


def slope_of(curves: dict, taus: dict, lr: float, iters: dict) -> tuple[float, bool]:
    """Slope of log best λ against log N from mean curves {N: losses over taus[N]}; and whether any
    size's optimum sat at its grid's edge."""
    ns = sorted(curves)
    opts = [interp_optimum(taus[n], curves[n]) for n in ns]
    lams = [best_lambda(o["x"], lr, iters[n]) for n, o in zip(ns, opts)]
    return fit_slope(ns, lams), any(o["edge"] for o in opts)


def bootstrap_slope(per_seed: dict, taus: dict, lr: float, iters: dict, draws: int = 2000, seed: int = 0) -> dict:
    """Seed bootstrap of the slope: ``per_seed`` is {N: array (seeds, len(taus[N]))}. Each draw
    resamples, independently per size (different sizes are different runs), that size's seeds with
    replacement, averages their curves and interpolates. Returns the point estimate, the 2.5-97.5%
    percentile interval, the draws, and the share of draws with an optimum at a grid edge."""
    rng = np.random.default_rng(seed)
    point, point_edge = slope_of({n: np.mean(v, 0) for n, v in per_seed.items()}, taus, lr, iters)
    out, edges = [], 0
    for _ in range(draws):
        curves = {}
        for n, v in per_seed.items():
            v = np.asarray(v, float)
            curves[n] = v[rng.integers(0, v.shape[0], v.shape[0])].mean(0)
        s, e = slope_of(curves, taus, lr, iters)
        out.append(s)
        edges += e
    out = np.asarray(out)
    lo, hi = np.percentile(out, [2.5, 97.5])
    return {"slope": point, "edge": point_edge, "lo": float(lo), "hi": float(hi), "draws": out,
            "edge_share": edges / draws}


# --- the dataset-size design ------------------------------------------------------------------


def _dataset(rows, cfg, corpus) -> dict:
    ds = [r for r in rows if r["experiment"] == "dataset"]
    sizes = [n for n in cfg.ds_sizes if any(r["dataset_tokens"] == n for r in ds)]
    per_size, per_seed, taus, iters = [], {}, {}, {}
    for n in sizes:
        grid = tau_window(n, cfg)
        here = [r for r in ds if r["dataset_tokens"] == n]
        seeds = sorted({r["seed"] for r in here})
        cell = {(r["seed"], r["tau_epochs"]): r["val_loss"] for r in here if r["mode"] == "tau"}
        full = [s for s in seeds if all((s, t) in cell for t in grid)]  # seeds with the whole τ window
        none = [r["val_loss"] for r in here if r["mode"] == "none"]
        partial = {t: float(np.mean([cell[(s, t)] for s in seeds if (s, t) in cell])) for t in grid
                   if any((s, t) in cell for s in seeds)}
        d = dict(dataset_tokens=n, epochs=here[0]["epochs"], iters_per_epoch=iters_per_epoch(n, cfg), taus=grid,
                 seeds=full, partial=partial, predictions=predictions(n, cfg), no_decay=float(np.mean(none)) if none else float("nan"))
        if full:
            v = np.array([[cell[(s, t)] for t in grid] for s in full])
            mean = v.mean(0)
            opt = interp_optimum(grid, mean)
            d.update(curve=mean, seed_curves=v, opt=opt,
                     seed_opts=[interp_optimum(grid, row)["x"] for row in v],
                     seed_std=float(np.std(v[:, int(np.argmin(mean))], ddof=1)) if len(full) > 1 else float("nan"),
                     weight_decay=best_lambda(opt["x"], cfg.ds_lr, d["iters_per_epoch"]))
            per_seed[n], taus[n], iters[n] = v, grid, d["iters_per_epoch"]
        if corpus is not None:
            d["ngram"] = ngram.baseline(corpus.train[: n + 1], corpus.val, cfg.ctx, cfg.val_windows)
        per_size.append(d)
    out = dict(sizes=per_size)
    if len(per_seed) >= 2:
        out["boot"] = bootstrap_slope(per_seed, taus, cfg.ds_lr, iters)
        common_seeds = sorted(set.intersection(*(set(d["seeds"]) for d in per_size if d["seeds"])))
        out["seed_slopes"] = {s: slope_of({n: per_seed[n][d["seeds"].index(s)] for n, d in
                                           ((d["dataset_tokens"], d) for d in per_size) if n in per_seed},
                                          taus, cfg.ds_lr, iters)[0] for s in common_seeds}
    return out


# --- the width design -------------------------------------------------------------------------


def _width(rows, cfg) -> dict:
    wd = [r for r in rows if r["experiment"] == "width"]
    base = cfg.w_widths[0]
    lrs = list(cfg.w_lrs)
    cell = {(r["mode"], r["width"], r["lr"], r["seed"]): r["val_loss"] for r in wd}
    # the base width is one run for both λ modes (they coincide there)
    for (mode, w, lr, s), v in list(cell.items()):
        if mode == "lambda_fixed" and w == base:
            cell.setdefault(("lambda_width", w, lr, s), v)
    out = {}
    for mode in ("lambda_fixed", "lambda_width", "none"):
        per = {}
        for w in cfg.w_widths:
            seeds = sorted({s for (m, ww, _, s) in cell if m == mode and ww == w})
            seeds = [s for s in seeds if all((mode, w, lr, s) in cell for lr in lrs)]
            if not seeds:
                continue
            v = np.array([[cell[(mode, w, lr, s)] for lr in lrs] for s in seeds])
            opt = interp_optimum(lrs, v.mean(0))
            per[w] = dict(seeds=seeds, curve=v.mean(0), seed_curves=v, opt=opt,
                          seed_opts=[interp_optimum(lrs, row)["x"] for row in v])
        if len(per) >= 2 and mode != "none":
            ws = sorted(per)
            d = {"slope": fit_slope(ws, [per[w]["opt"]["x"] for w in ws])}
            rng = np.random.default_rng(0)
            draws = []
            for _ in range(2000):
                xs = []
                for w in ws:
                    sv = per[w]["seed_curves"]
                    xs.append(interp_optimum(lrs, sv[rng.integers(0, sv.shape[0], sv.shape[0])].mean(0))["x"])
                draws.append(fit_slope(ws, xs))
            d["lo"], d["hi"] = (float(x) for x in np.percentile(draws, [2.5, 97.5]))
            out[mode + "_lr_slope"] = d
        out[mode] = per
    return out


def summarize(rows: list[dict], cfg, design: str, corpus=None) -> dict:
    return _dataset(rows, cfg, corpus) if design == "dataset" else _width(rows, cfg)


# --- report -----------------------------------------------------------------------------------


def _edge_words(opt) -> str:
    return "" if opt["edge"] is None else f"  [at the grid's {opt['edge']} edge: not bracketed]"


def print_summary(s: dict, cfg, design: str, info: dict) -> None:
    print(f"sweep lm-fair {design} ({cfg.name}) on the stdlib corpus: {info['corpus_bytes']} bytes, sha256 "
          f"{info['corpus_sha256']}, {info['python']}")
    if design == "dataset":
        print(f"dataset: width {cfg.ds_width}, lr {cfg.ds_lr:g}, {cfg.ds_steps} steps at every size; val loss in "
              "nats/byte on the same windows as the n-gram baseline (interpolated Witten-Bell)")
        for d in s["sizes"]:
            ng = d.get("ngram", {})
            best_k = min(ng, key=ng.get) if ng else None
            line = (f"  N = {d['dataset_tokens']:8d} ({d['epochs']:2d} epochs of {d['iters_per_epoch']}): "
                    + (f"n-gram best {ng[best_k]:.3f} (order {best_k}), trigram {ng.get(3, float('nan')):.3f}; " if ng else "")
                    + f"no decay {d['no_decay']:.3f}")
            print(line)
            if "opt" in d:
                o = d["opt"]
                print(f"      best τ_epoch {o['x']:.3g} (interpolated; τ_iter {o['x'] * d['iters_per_epoch']:.0f}), val "
                      f"{o['y']:.3f}, λ {d['weight_decay']:.3g}; per seed " + ", ".join(f"{x:.3g}" for x in d["seed_opts"])
                      + f"; {len(d['seeds'])} seeds, seed std at the best grid point {d['seed_std']:.3f}" + _edge_words(o))
                print(f"      predicted {d['predictions']['tau_epoch_constant']:g} (seeds' rule) or "
                      f"{d['predictions']['tau_iter_constant']:g} (τ_iter fixed)")
                print("      val by τ_epoch: " + "  ".join(f"{t:.3g}: {v:.3f}" for t, v in zip(d["taus"], d["curve"])))
            elif d["partial"]:
                print("      no seed has the whole τ window yet; val by τ_epoch so far: "
                      + "  ".join(f"{t:.3g}: {v:.3f}" for t, v in d["partial"].items()))
        if "boot" in s:
            b = s["boot"]
            one = any(len(d["seeds"]) < 2 for d in s["sizes"] if "opt" in d)
            print(f"  slope of log best λ vs log N: {b['slope']:+.2f}, " + (
                "no interval: a size has one seed only" if one else
                f"seed-bootstrap 95% interval [{b['lo']:+.2f}, {b['hi']:+.2f}] ({len(b['draws'])} draws; "
                f"{100 * b['edge_share']:.0f}% with an optimum at a grid edge)"))
            print("  the seeds' rule predicts -1; best τ a fixed fraction of the run predicts 0")
            if s.get("seed_slopes"):
                print("  per seed: " + ", ".join(f"seed {k}: {v:+.2f}" for k, v in s["seed_slopes"].items()))
        return
    print(f"width: μP widths {', '.join(map(str, cfg.w_widths))} (base {cfg.w_widths[0]}), {cfg.w_epochs} epochs of "
          f"{cfg.w_tokens} tokens; best base lr interpolated in log lr")
    for mode in ("lambda_fixed", "lambda_width", "none"):
        per = s.get(mode, {})
        if not per:
            continue
        print(f"  {mode:13s} " + "  ".join(f"w{w}: lr {d['opt']['x']:.3g}{'*' if d['opt']['edge'] else ''} val "
                                           f"{d['opt']['y']:.3f}" for w, d in per.items()))
        sl = s.get(mode + "_lr_slope")
        if sl:
            print(f"  {'':13s} slope of log best lr vs log width {sl['slope']:+.2f}, seed bootstrap [{sl['lo']:+.2f}, "
                  f"{sl['hi']:+.2f}]")
    print("  (* = at the lr grid's edge)")


def plot(s: dict, cfg, design: str, path: str, info: dict) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    if design == "dataset":
        a = axes[0]
        for d in s["sizes"]:
            if "curve" not in d:
                if d["partial"]:
                    a.plot(list(d["partial"]), list(d["partial"].values()), "s--", mfc="none",
                           label=f"N = {d['dataset_tokens']:,} ({d['epochs']} ep), τ window incomplete")
                continue
            line, = a.plot(d["taus"], d["curve"], "o-", label=f"N = {d['dataset_tokens']:,} ({d['epochs']} ep)")
            for row in d["seed_curves"]:
                a.plot(d["taus"], row, ".", color=line.get_color(), alpha=0.4)
            a.plot([d["opt"]["x"]], [d["opt"]["y"]], "*", ms=12, color=line.get_color())
            if math.isfinite(d["no_decay"]):
                a.axhline(d["no_decay"], ls=":", color=line.get_color())
            if d.get("ngram"):
                a.axhline(min(d["ngram"].values()), ls="--", lw=0.8, color=line.get_color())
        a.set_xscale("log")
        a.set_xlabel("τ_epoch")
        a.set_ylabel("val loss (nats/byte)")
        a.set_title(f"{cfg.ds_steps} steps at every N (★ interpolated optimum; dotted: no decay; dashed: best n-gram)",
                    fontsize=8)
        a.legend(fontsize=7)
        a = axes[1]
        have = [d for d in s["sizes"] if "opt" in d]
        if have:
            ns = np.array([d["dataset_tokens"] for d in have], float)
            lam = np.array([d["weight_decay"] for d in have])
            b = s.get("boot")
            one = any(len(d["seeds"]) < 2 for d in have)
            a.loglog(ns, lam, "o-", label="best λ" + (f" (slope {b['slope']:+.2f}" + (", one seed)" if one else
                                                      f", 95% [{b['lo']:+.2f}, {b['hi']:+.2f}])") if b else ""))
            for d in have:
                for x in d["seed_opts"]:
                    a.plot([d["dataset_tokens"]], [best_lambda(x, cfg.ds_lr, d["iters_per_epoch"])], "k.", alpha=0.4)
            mid = len(ns) // 2
            a.loglog(ns, lam[mid] * ns[mid] / ns, "k--", lw=0.8, label="slope −1 (the seeds' rule)")
            a.loglog(ns, lam[mid] * np.ones_like(ns), "k:", lw=0.8, label="slope 0 (τ a fixed fraction of the run)")
            a.legend(fontsize=7)
        a.set_xlabel("dataset size N (bytes)")
        a.set_ylabel("best λ (torch form)")
    else:
        for a, mode in zip(axes, ("lambda_fixed", "lambda_width")):
            for w, d in s.get(mode, {}).items():
                line, = a.plot(cfg.w_lrs, d["curve"], "o-", label=f"width {w}")
                a.plot([d["opt"]["x"]], [d["opt"]["y"]], "*", ms=12, color=line.get_color())
            for w, d in s.get("none", {}).items():
                a.plot(cfg.w_lrs, d["curve"], "x:", color="gray", label=f"λ = 0, width {w}")
            a.set_xscale("log")
            a.set_xlabel("base lr")
            a.set_ylabel("val loss (nats/byte)")
            a.set_title({"lambda_fixed": "λ fixed", "lambda_width": "λ · width_mult (lr·λ fixed per step)"}[mode],
                        fontsize=9)
            a.legend(fontsize=7)
    from matplotlib.ticker import NullFormatter
    for a in axes.flat:
        a.xaxis.set_minor_formatter(NullFormatter())
        a.yaxis.set_minor_formatter(NullFormatter())
    fig.suptitle(f"sweep lm-fair {design} ({cfg.name}): stdlib corpus {info['corpus_bytes']:,} B, sha256 "
                 f"{info['corpus_sha256']}, {info['python']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
