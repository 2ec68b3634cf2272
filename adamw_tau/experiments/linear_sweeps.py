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
         (adamw_tau/sweep_lm.py).

Every run is one parameter group of one AdamWTau (the fastest backend available), so a whole
grid steps in one optimizer step; the loss and gradients of all runs are computed batched.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from . import AdamWTau, mup_param_groups

# --- shared ---------------------------------------------------------------------------------


def _bar(total: int, desc: str, enabled: bool = True):
    try:
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, leave=False, disable=not enabled)
    except ImportError:  # pragma: no cover
        class _B:
            def update(self, n=1): pass
            def close(self): pass
        return _B()


def _geom(lo: float, hi: float, n: int) -> list[float]:
    return [float(x) for x in np.geomspace(lo, hi, n)]


def _write_csv(path: str, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


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


# --- ridge ----------------------------------------------------------------------------------


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
    lrs = _geom(1e-4, 1.0, cfg.grid)
    # the torch form's lambda axis has the lr axis's log step (so lr*lambda fixed is a grid
    # diagonal) and reaches 1/lr_min, where even the smallest lr decays; cells with
    # lr*lambda > 1 (a negative decay factor) are not run
    step = (math.log10(lrs[-1]) - math.log10(lrs[0])) / (cfg.grid - 1)
    torch_lambdas = [10.0 ** (-3.0 + k * step) for k in range(int(round(6.0 / step)) + 1)]
    lh_lambdas = _geom(1e-4, 1.0, cfg.grid)          # LH form: d = 1 - lambda * eta_t, lambda <= 1
    m = cfg.n // cfg.batch
    tau_epochs = _geom(0.1, 1000.0, cfg.grid)       # tau form: tau_iter = tau_epoch * M
    forms = {
        "torch": (torch_lambdas, lambda lr, x: {"lr": lr, "weight_decay": x} if lr * x <= 1.0 else None),
        "loshchilov_hutter": (lh_lambdas, lambda lr, x: {"lr": lr, "tau_iters": 1.0 / x}),
        "tau": (tau_epochs, lambda lr, x: {"lr": lr, "tau_epochs": x, "iters_per_epoch": m}),
    }
    results = {}
    rows = []
    bar = _bar(len(forms) * 2 * cfg.seeds * cfg.epochs, "sweep ridge", progress)
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
    _write_csv(os.path.join(out, "ridge.csv"), ["schedule", "form", "lr", "decay_axis", "val_loss"], rows)
    _plot_ridge(results, lrs, os.path.join(out, "ridge.png"))
    summary = {f"{s}/{f}": (r["slope"], r["corr"]) for (s, f), r in results.items()}
    print("ridge: slope and correlation of log(valley centre) vs log(lr) across lr rows "
          "(torch form: near -1 = diagonal valley; LH and tau forms: near 0 = axis-aligned)")
    for k, (slope, corr) in summary.items():
        print(f"  {k:28s} slope {slope:+.2f}  corr {corr:+.2f}")
    return {"summary": summary, "lrs": lrs, "results": results}


def _plot_ridge(results, lrs, path):
    plt = _plt()
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
    tau_epochs = _geom(0.05, 50.0, 6 if quick else 11)
    epochs, batch, lr, d, seeds = (8, 20, 1e-2, 50, 1) if quick else (30, 20, 1e-2, 100, 3)
    rows, best = [], []
    bar = _bar(len(sizes) * seeds * epochs, "sweep dataset", progress)
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
    _write_csv(os.path.join(out, "dataset.csv"), ["dataset_size", "tau_epochs", "lambda", "val_loss"], rows)
    plt = _plt()
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


# --- width ----------------------------------------------------------------------------------


class _MLP(torch.nn.Module):
    def __init__(self, d_in: int, width: int):
        super().__init__()
        self.inp = torch.nn.Linear(d_in, width)
        self.hidden = torch.nn.Linear(width, width)
        self.out = torch.nn.Linear(width, 1)
        with torch.no_grad():  # muP init: readout variance 1/fan_in^2
            self.out.weight.normal_(0, 1.0 / width)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(torch.relu(self.inp(x))))).squeeze(-1)


def sweep_width(out: str, quick: bool = False, progress: bool = True) -> dict:
    widths = [64, 128, 256] if quick else [64, 128, 256, 512]
    lrs = _geom(3e-4, 3e-1, 5 if quick else 9)
    steps, d_in, n, batch = (150, 16, 512, 32) if quick else (600, 32, 2048, 64)
    # lambda = 0.5 at the reference lr 1e-2 is tau_iter = 200 steps, well inside the run
    base_width, lam, ref_lr = widths[0], 0.5, 1e-2
    g = torch.Generator().manual_seed(5)
    X = torch.randn(n, d_in, generator=g)
    Xv = torch.randn(1024, d_in, generator=g)
    torch.manual_seed(5)
    teacher = _MLP(d_in, 32)
    with torch.no_grad():  # a teacher with O(1) outputs, scaled to unit variance: loss 1 = predicting the mean
        teacher.out.weight.normal_(0, 1.0)
        y, yv = teacher(X), teacher(Xv)
        mu, sd = y.mean(), y.std()
        y = (y - mu) / sd + 0.3 * torch.randn(n, generator=g)
        yv = (yv - mu) / sd
    rows, table = [], {}
    bar = _bar(2 * len(widths) * len(lrs), "sweep width", progress)
    for mode in ("lambda_fixed", "tau_fixed"):
        for w in widths:
            for lr in lrs:
                torch.manual_seed(0)
                model, base = _MLP(d_in, w), _MLP(d_in, base_width)
                groups = mup_param_groups(model, base, lr=lr)
                if mode == "lambda_fixed":
                    opt = AdamWTau(groups, lr=lr, weight_decay=lam)
                else:
                    # the same τ at every lr and width: τ_iter = 1 / (lr_ref · λ)
                    opt = AdamWTau(groups, lr=lr, tau_iters=1.0 / (ref_lr * lam))
                gen = torch.Generator().manual_seed(1)
                for _ in range(steps):
                    idx = torch.randint(0, n, (batch,), generator=gen)
                    loss = ((model(X[idx]) - y[idx]) ** 2).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                with torch.no_grad():
                    v = float(((model(Xv) - yv) ** 2).mean())
                v = v if math.isfinite(v) else float("nan")
                table[(mode, w, lr)] = v
                rows.append([mode, w, lr, v])
                bar.update(1)
    bar.close()
    os.makedirs(out, exist_ok=True)
    _write_csv(os.path.join(out, "width.csv"), ["mode", "width", "lr", "val_loss"], rows)
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    best = {}
    for ax, mode in zip(axes, ("lambda_fixed", "tau_fixed")):
        for w in widths:
            vals = [table[(mode, w, lr)] for lr in lrs]
            ax.plot(lrs, vals, "o-", label=f"width {w}")
            best[(mode, w)] = lrs[int(np.nanargmin(vals))]
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("base lr (μP-scaled per group)")
        ax.set_title({"lambda_fixed": "λ fixed (torch form)", "tau_fixed": "τ fixed"}[mode])
        ax.legend(fontsize=7)
    axes[0].set_ylabel("val loss")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "width.png"), dpi=110)
    plt.close(fig)
    print("width: best base lr per width")
    for mode in ("lambda_fixed", "tau_fixed"):
        print(f"  {mode:13s} " + "  ".join(f"w{w}: {best[(mode, w)]:.2g}" for w in widths))
    return {"best": best, "table": table}


SWEEPS = {"ridge": sweep_ridge, "dataset": sweep_dataset, "width": sweep_width}


def add_parser(sub, func) -> None:
    s = sub.add_parser("sweep", help="reproduce the seeds' experiments (ridge, dataset, width, lm)")
    s.add_argument("which", choices=[*SWEEPS, "lm"])
    s.add_argument("--out", default=".", help="folder for the PNG and CSV (default: here)")
    s.add_argument("--quick", action="store_true", help="a small grid, for CI")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--init", type=float, default=None,
                   help="ridge: the scale of the random start w0 (default 1.0; 0 starts at zero)")
    s.add_argument("--device", default=None, help="lm: cpu (default) or cuda")
    s.add_argument("--part", default=None, metavar="I/K", help="lm: run the I-th of K shares of the grid")
    s.add_argument("--plan", action="store_true", help="lm: print the runs, FLOPs and estimated time per part, and stop")
    s.add_argument("--backend", default=None, help="lm: AdamWTau backend (default: auto on cuda, reference on cpu)")
    s.add_argument("--compile", action="store_true", help="lm: torch.compile the model")
    s.set_defaults(func=func)


def main(args) -> int:
    if args.which == "lm":
        from . import sweep_lm
        return sweep_lm.main(args)
    extra = {"init": args.init} if args.which == "ridge" and args.init is not None else {}
    SWEEPS[args.which](args.out, quick=args.quick, progress=not args.no_progress, **extra)
    for ext in ("png", "csv"):
        print(f"wrote {os.path.join(args.out, f'{args.which}.{ext}')}")
    return 0
