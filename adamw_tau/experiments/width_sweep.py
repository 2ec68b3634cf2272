"""``adamw-tau sweep width``: μP MLPs at several widths, an lr sweep with λ fixed (torch form)
against τ fixed; each width's best lr."""
from __future__ import annotations

import math
import os

import numpy as np
import torch

from ..optim.optimizer import AdamWTau
from ..scaling.mup import mup_param_groups
from . import common


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
    lrs = common.geom(3e-4, 3e-1, 5 if quick else 9)
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
    bar = common.progress_bar(2 * len(widths) * len(lrs), "sweep width", progress)
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
    common.write_csv(os.path.join(out, "width.csv"), ["mode", "width", "lr", "val_loss"], rows)
    plt = common.pyplot()
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
