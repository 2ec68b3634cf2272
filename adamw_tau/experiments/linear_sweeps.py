"""``adamw-tau sweep``: the seeds' experiments, run with AdamWTau itself.

ridge    Schaipp's decoupling experiment: ridge regression, A in R^{200x1000}, batch 20, 50
         epochs, 5 seeds, constant and 1/sqrt(epoch) schedules; a grid of lr x decay for the
         torch form (d = 1 - lr_t*lambda), the Loshchilov-Hutter form (d = 1 - lambda*eta_t,
         eta_t = lr_t/lr_peak; that is AdamWTau's tau form with tau_iter = 1/lambda) and the tau
         form on a tau_epoch axis. Prints the slope of the valley (log decay against log lr).
         Runs start from a random w0 (--init): from w0 = 0 there is nothing for the decay's
         moving average to forget, and the valleys swap shapes (README, "Sweeps").
dataset  Wang & Aitchison's claim: the best tau_epoch stays put as the dataset grows, so the
         best lambda falls ~ 1/size. Teacher-student regression at several sizes.
width    muP MLPs at several widths: an lr sweep with lambda fixed vs tau fixed.
lm       a byte-level transformer on the standard library's source: both claims on real text
         (adamw_tau/experiments/lm/sweep.py).

Every run is one parameter group of one AdamWTau (the fastest backend available), so a whole
grid steps in one optimizer step; the loss and gradients of all runs are computed batched.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..optim.optimizer import AdamWTau
from . import common

# --- ridge ----------------------------------------------------------------------------------


def valley_slope(loss: np.ndarray, lrs, decays, band: float = 0.05) -> tuple[float, float]:
    """Slope and correlation, across the grid's lr rows, of log(valley centre) against log(lr).

    A row's valley is its cells within ``band`` of the row's best loss, and its centre the mean
    log decay over them: a diagonal valley (torch form) gives a slope near -1, an axis-aligned
    one near 0. The centre and not the argmin: inside the valley the loss is nearly flat and
    its argmin wanders from seed to seed. Rows where the decay moves the loss by less than 2%
    say nothing about the valley and are left out; NaN if fewer than two rows are left.
    """
    x, y = [], []
    for lr, row in zip(lrs, np.asarray(loss, dtype=float)):
        if not np.isfinite(row).any() or np.nanmax(row) <= 1.02 * np.nanmin(row):
            continue
        inside = np.isfinite(row) & (row <= (1.0 + band) * np.nanmin(row))
        x.append(math.log(lr))
        y.append(float(np.mean(np.log(np.asarray(decays)[inside]))))
    if len(x) < 2:
        return float("nan"), float("nan")
    slope = float(np.polyfit(x, y, 1)[0])
    corr = float(np.corrcoef(x, y)[0, 1]) if np.std(y) > 0 else 0.0
    return slope, corr


def _train_linear(data, runs, epochs: int, batch: int, schedule: str, seed: int, progress,
                  init: float = 0.0) -> np.ndarray:
    """Train one linear model per run (a dict of AdamWTau group options) on shared data.

    data: (A_train, b_train, A_val, b_val). Loss ||A w - b||^2 per batch (sum over the batch).
    Every run starts from the same w0 ~ N(0, init^2). Returns the final validation loss
    (mean squared error) per run; NaN for a run given as None (a decay factor outside [0, 1]).
    """
    A, b, Av, bv = data
    n, d = A.shape
    gen = torch.Generator().manual_seed(seed)
    total = len(runs)
    valid = [i for i, r in enumerate(runs) if r is not None]
    runs = [runs[i] for i in valid]
    w = (init * torch.randn(d, generator=gen)).expand(len(runs), d)
    params = [torch.nn.Parameter(w[i].clone()) for i in range(len(runs))]
    groups = [{"params": [p], **opts} for p, opts in zip(params, runs)]
    opt = AdamWTau(groups, lr=1e-3)
    iters = n // batch
    if schedule == "sqrt":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0 / math.sqrt(it // iters + 1))
    else:
        sched = None
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for k in range(iters):
            idx = perm[k * batch:(k + 1) * batch]
            W = torch.stack([p.detach() for p in params])          # runs x d
            r = W @ A[idx].T - b[idx]                              # runs x batch
            G = 2.0 * r @ A[idx]                                   # runs x d
            for p, g in zip(params, G):
                p.grad = g
            opt.step()
            if sched is not None:
                sched.step()
        progress.update(1)
    W = torch.stack([p.detach() for p in params])
    loss = np.full(total, np.nan)
    loss[valid] = ((W @ Av.T - bv) ** 2).mean(dim=1).numpy()
    return loss


@dataclass
class RidgeConfig:
    n: int = 200
    d: int = 1000
    batch: int = 20
    epochs: int = 50
    seeds: int = 5
    grid: int = 13
    init: float = 1.0   # w0 ~ N(0, init^2): what the decay's moving average has to forget


def ridge_data(cfg: RidgeConfig, seed: int):
    g = torch.Generator().manual_seed(1000 + seed)
    # rows of unit norm on average and O(1) weights: Adam's per-coordinate steps of size lr
    # then mean the same thing as in the post's grid (lr 1e-4 .. 1)
    w_star = torch.randn(cfg.d, generator=g)
    A = torch.randn(cfg.n, cfg.d, generator=g) / math.sqrt(cfg.d)
    Av = torch.randn(cfg.n, cfg.d, generator=g) / math.sqrt(cfg.d)
    b = A @ w_star + 0.5 * torch.randn(cfg.n, generator=g)
    bv = Av @ w_star + 0.5 * torch.randn(cfg.n, generator=g)
    return A, b, Av, bv


def sweep_ridge(out: str, quick: bool = False, progress: bool = True, init: float | None = None) -> dict:
    cfg = RidgeConfig(epochs=10, seeds=2, grid=7) if quick else RidgeConfig()
    if init is not None:
        cfg.init = init
    lrs = common.geom(1e-4, 1.0, cfg.grid)
    # the torch form's lambda axis has the lr axis's log step (so lr*lambda fixed is a grid
    # diagonal) and reaches 1/lr_min, where even the smallest lr decays; cells with
    # lr*lambda > 1 (a negative decay factor) are not run
    step = (math.log10(lrs[-1]) - math.log10(lrs[0])) / (cfg.grid - 1)
    torch_lambdas = [10.0 ** (-3.0 + k * step) for k in range(int(round(6.0 / step)) + 1)]
    lh_lambdas = common.geom(1e-4, 1.0, cfg.grid)          # LH form: d = 1 - lambda * eta_t, lambda <= 1
    m = cfg.n // cfg.batch
    tau_epochs = common.geom(0.1, 1000.0, cfg.grid)       # tau form: tau_iter = tau_epoch * M
    forms = {
        "torch": (torch_lambdas, lambda lr, x: {"lr": lr, "weight_decay": x} if lr * x <= 1.0 else None),
        "loshchilov_hutter": (lh_lambdas, lambda lr, x: {"lr": lr, "tau_iters": 1.0 / x}),
        "tau": (tau_epochs, lambda lr, x: {"lr": lr, "tau_epochs": x, "iters_per_epoch": m}),
    }
    results = {}
    rows = []
    bar = common.progress_bar(len(forms) * 2 * cfg.seeds * cfg.epochs, "sweep ridge", progress)
    for sched in ("constant", "sqrt"):
        for form, (axis, opts) in forms.items():
            runs = [opts(lr, x) for lr in lrs for x in axis]
            loss = np.zeros(len(runs))
            for s in range(cfg.seeds):
                loss += _train_linear(ridge_data(cfg, s), runs, cfg.epochs, cfg.batch, sched, s, bar, cfg.init)
            loss = (loss / cfg.seeds).reshape(len(lrs), len(axis))
            loss = np.where(np.isfinite(loss), loss, np.nan)
            slope, corr = valley_slope(loss, lrs, axis)
            results[(sched, form)] = dict(loss=loss, axis=axis, slope=slope, corr=corr)
            for i, lr in enumerate(lrs):
                for j, x in enumerate(axis):
                    rows.append([sched, form, lr, x, loss[i, j]])
    bar.close()
    os.makedirs(out, exist_ok=True)
    common.write_csv(os.path.join(out, "ridge.csv"), ["schedule", "form", "lr", "decay_axis", "val_loss"], rows)
    _plot_ridge(results, lrs, os.path.join(out, "ridge.png"))
    summary = {f"{s}/{f}": (r["slope"], r["corr"]) for (s, f), r in results.items()}
    print("ridge: slope and correlation of log(valley centre) vs log(lr) across lr rows "
          "(torch form: near -1 = diagonal valley; LH and tau forms: near 0 = axis-aligned)")
    for k, (slope, corr) in summary.items():
        print(f"  {k:28s} slope {slope:+.2f}  corr {corr:+.2f}")
    return {"summary": summary, "lrs": lrs, "results": results}


def _plot_ridge(results, lrs, path):
    plt = common.pyplot()
    scheds = ("constant", "sqrt")
    forms = ("torch", "loshchilov_hutter", "tau")
    ylabels = {"torch": "λ (d = 1 − lr_t·λ)", "loshchilov_hutter": "λ (d = 1 − λ·η_t)", "tau": "τ_epoch"}
    fig, axes = plt.subplots(4, 3, figsize=(13, 15))
    for r, sched in enumerate(scheds):
        for c, form in enumerate(forms):
            res = results[(sched, form)]
            ax = axes[2 * r, c]
            loss = np.log10(res["loss"])
            im = ax.imshow(loss.T, origin="lower", cmap="magma_r", aspect="auto")
            ax.set_xticks(range(len(lrs)), [f"{v:.0e}" for v in lrs], rotation=60, fontsize=6)
            ax.set_yticks(range(len(res["axis"])), [f"{v:.0e}" for v in res["axis"]], fontsize=6)
            ax.set_xlabel("lr")
            ax.set_ylabel(ylabels[form])
            ax.set_title(f"{form}, {sched} schedule\nvalley slope (log decay vs log lr): {res['slope']:+.2f}",
                         fontsize=9)
            fig.colorbar(im, ax=ax, label="log10 val loss (bright = low)")
            # S1: decay fixed at the grid's best row; S2 (torch form): lr*lambda fixed
            i0, j0 = np.unravel_index(np.nanargmin(res["loss"]), res["loss"].shape)
            s1 = [res["loss"][i, j0] for i in range(len(lrs))]
            ax2 = axes[2 * r + 1, c]
            ax2.plot(lrs, s1, "o-", label="S1: decay fixed")
            if form == "torch":
                s2 = [res["loss"][i, j0 + (i0 - i)] if 0 <= j0 + (i0 - i) < len(res["axis"]) else np.nan
                      for i in range(len(lrs))]
                ax2.plot(lrs, s2, "s-", label="S2: lr·λ fixed")
            ax2.set_xscale("log")
            ax2.set_yscale("log")
            ax2.set_xlabel("lr")
            ax2.set_ylabel("val loss")
            ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- dataset size ---------------------------------------------------------------------------


def sweep_dataset(out: str, quick: bool = False, progress: bool = True) -> dict:
    """Teacher-student linear regression (d = 100, noisy labels) at several dataset sizes.

    The student starts from a random w0 as large as the teacher: the decay's moving average
    has that to forget within the run, and the noise of the late updates to average out.
    """
    sizes = [100, 400, 1600] if quick else [200, 800, 3200]
    tau_epochs = common.geom(0.05, 50.0, 6 if quick else 11)
    epochs, batch, lr, d, seeds = (8, 20, 1e-2, 50, 1) if quick else (30, 20, 1e-2, 100, 3)
    rows, best = [], []
    bar = common.progress_bar(len(sizes) * seeds * epochs, "sweep dataset", progress)
    curves = {}
    for n in sizes:
        m = n // batch
        valid = [t * m >= 1.0 for t in tau_epochs]  # tau_iter < 1 would decay by more than the weight
        runs = [{"lr": lr, "tau_epochs": t, "iters_per_epoch": m} for t, ok in zip(tau_epochs, valid) if ok]
        loss = np.zeros(len(runs))
        for s in range(seeds):
            g = torch.Generator().manual_seed(77 + s)
            w_star = torch.randn(d, generator=g) / math.sqrt(d)
            A = torch.randn(n, d, generator=g)
            Av = torch.randn(2000, d, generator=g)
            b = A @ w_star + 1.0 * torch.randn(n, generator=g)
            bv = Av @ w_star
            loss += _train_linear((A, b, Av, bv), runs, epochs, batch, "constant", s, bar, 1.0 / math.sqrt(d))
        loss /= seeds
        full = np.full(len(tau_epochs), np.nan)
        full[np.array(valid)] = loss
        loss = full
        curves[n] = loss
        k = int(np.nanargmin(loss))
        best.append((n, tau_epochs[k], 1.0 / (lr * m * tau_epochs[k])))
        rows += [[n, t, 1.0 / (lr * m * t), l] for t, l in zip(tau_epochs, loss)]
    bar.close()
    os.makedirs(out, exist_ok=True)
    common.write_csv(os.path.join(out, "dataset.csv"), ["dataset_size", "tau_epochs", "lambda", "val_loss"], rows)
    plt = common.pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for n, loss in curves.items():
        a1.plot(tau_epochs, loss, "o-", label=f"N = {n}")
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel("τ_epoch")
    a1.set_ylabel("val loss")
    a1.legend()
    ns = [b_[0] for b_ in best]
    a2.loglog(ns, [b_[2] for b_ in best], "o-", label="best λ")
    a2.loglog(ns, [best[0][2] * ns[0] / x for x in ns], "k--", label="∝ 1/N")
    a2.set_xlabel("dataset size N")
    a2.set_ylabel("best λ (torch form)")
    a2.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "dataset.png"), dpi=110)
    plt.close(fig)
    slope = float(np.polyfit(np.log(ns), np.log([b_[2] for b_ in best]), 1)[0])
    print("dataset: best τ_epoch and λ per size")
    for n, t, lam in best:
        print(f"  N = {n:6d}  best τ_epoch {t:8.3g}  best λ {lam:8.3g}")
    print(f"  slope of log best λ vs log N: {slope:+.2f} (the paper's rule predicts -1)")
    return {"best": best, "slope": slope, "tau_epochs": tau_epochs, "curves": curves}


