"""``adamw-tau sweep lm-fair``: a test of the seeds' two claims that can tell them from their rivals.

dataset  The number of steps is fixed across dataset sizes N (epochs = steps / iters_per_epoch), so
         the seeds' rule (best τ_epoch constant, best λ ∝ 1/N) predicts a slope of −1 for log best λ
         against log N, and the rival "best τ a fixed fraction of the run" (τ_iter constant)
         predicts 0. Sizes are ones where the model beats an n-gram model on the same evaluation
         windows (printed beside each size). The τ_epoch grid steps by √2 over a window fixed in
         advance from the two predictions (see ``tau_window``), plus no decay; optima are
         interpolated in log τ; the slope's interval is a seed bootstrap.
width    μP widths; two modes that differ only in how λ follows width, both identical at the base
         width (every multiplier 1) and both holding λ fixed across the lr sweep: λ fixed (torch
         form: the hidden layers' per-step decay lr·λ shrinks with width) against λ·width_mult
         (``mup_param_groups(weight_decay=λ)``: lr·λ per step is the same at every width); a λ = 0
         control at the smallest and largest width. The best log-lr is fitted against log width.

Every run is one row of the LM sweep's CSV format, written as it finishes; a rerun skips the rows
already there. The grids are set before the runs they report: see ``PILOT_NOTE`` and docs/experiments.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import grid
from .grid import LMConfig
from .tiny_gpt import flops_per_token

SQRT2 = math.sqrt(2.0)

# What set these grids (all of it measured before any run the grids report): the committed medium
# sweep (docs/sweeps/lm_medium.csv, lm_medium_pilots.csv) at width 64, lr 1e-2, ctx 64, batch 32:
# 1,024 steps on 262k bytes gave val 1.68 at τ_epoch 1 (τ_iter 128 = T/8), flanked by 1.72 at 0.5
# and 2; and lr 1e-2 beat 3e-2. The fair grid keeps that shape and lr and that number of steps.
PILOT_NOTE = ("grids set from docs/sweeps/lm_medium.csv and lm_medium_pilots.csv (width 64, lr 1e-2, "
              "1,024 steps on 262k bytes: best τ_epoch 1 = τ_iter 128)")


@dataclass(frozen=True)
class FairConfig:
    name: str
    layers: int
    ctx: int
    batch: int
    head_dim: int
    warmup_frac: float
    val_windows: int
    # dataset-size design: a fixed number of steps at every size
    ds_width: int
    ds_lr: float
    ds_steps: int
    ds_sizes: tuple
    ds_pilot_size: int      # the size whose best τ_epoch (ds_pilot_tau) the pilots measured at ds_steps
    ds_pilot_tau: float
    ds_margin: float        # the τ window reaches this factor beyond both predictions
    ds_seeds: int
    # width design
    w_widths: tuple
    w_lrs: tuple
    w_tokens: int
    w_epochs: int
    w_tau_epochs: float     # sets λ = 1 / (w_ref_lr · M · τ_epoch), then held across lrs and (mode 1) widths
    w_ref_lr: float
    w_seeds: int
    cpu_threads: int = 1
    cpu_workers: int = 2
    cpu_tokens_per_s: tuple = ()  # per width, one process beside a second; empty: costed on an H100

    def lm(self, widths: tuple | None = None) -> LMConfig:
        """The LMConfig ``train_run`` reads (its epoch count comes with each job)."""
        return LMConfig(name=self.name, layers=self.layers, ctx=self.ctx, batch=self.batch, head_dim=self.head_dim,
                        warmup_frac=self.warmup_frac, val_windows=self.val_windows, ds_width=self.ds_width,
                        ds_lr=self.ds_lr, ds_sizes=self.ds_sizes, ds_epochs=0, ds_taus=(), ds_seeds=self.ds_seeds,
                        w_widths=widths or self.w_widths, w_lrs=self.w_lrs, w_tokens=self.w_tokens,
                        w_epochs=self.w_epochs, w_tau_epochs=self.w_tau_epochs, w_ref_lr=self.w_ref_lr,
                        w_seeds=self.w_seeds, cpu_threads=self.cpu_threads, cpu_tokens_per_s=self.cpu_tokens_per_s,
                        cpu_workers=self.cpu_workers)


# CPU: 2 cores. The dataset design (width 64, 2 layers, ctx 64, batch 32, lr 1e-2, 1,024 steps a run as
# the medium sweep's 262k-byte runs) is about 35 minutes wall on an otherwise idle machine; 131k / 262k /
# 524k bytes are 16 / 8 / 4 epochs. The width design (widths 16-64, head size 16, 8 epochs of 131k bytes
# = 512 steps, τ_iter = 32 = 1/16 of the run at the base width, 3 seeds) is about 31 minutes more.
FAIR_CPU = FairConfig(
    name="fair-cpu", layers=2, ctx=64, batch=32, head_dim=16, warmup_frac=0.02, val_windows=512,
    ds_width=64, ds_lr=1e-2, ds_steps=1024, ds_sizes=(131072, 262144, 524288), ds_pilot_size=262144,
    ds_pilot_tau=1.0, ds_margin=2.0, ds_seeds=2,
    w_widths=(16, 32, 64), w_lrs=tuple(float(x) for x in np.geomspace(1e-2, 1e-1, 5)), w_tokens=131072,
    w_epochs=8, w_tau_epochs=0.5, w_ref_lr=float(np.geomspace(1e-2, 1e-1, 5)[2]), w_seeds=3,
    cpu_tokens_per_s=((16, 60e3), (32, 35e3), (64, 22e3), (128, 8e3)))

# GPU (one H100/H200): width 256, 4 layers, ctx 256, batch 64, head size 32, lr 1e-3 (the full `sweep lm`
# grid's); 0.5M / 1M / 2M bytes at a fixed 2,048 steps (64 / 32 / 16 epochs), about 32 minutes by the H100
# cost model of grid.py; widths 64-512 for transfer (512 steps, 3 seeds), about 21 minutes. The τ window is
# anchored by a pilot (``--pilot``: the middle size, one seed) that is run first and kept beside the grid.
FAIR_GPU = FairConfig(
    name="fair-gpu", layers=4, ctx=256, batch=64, head_dim=32, warmup_frac=0.02, val_windows=512,
    ds_width=256, ds_lr=1e-3, ds_steps=2048, ds_sizes=(524288, 1048576, 2097152), ds_pilot_size=1048576,
    ds_pilot_tau=1.0, ds_margin=2.0, ds_seeds=3,
    w_widths=(64, 128, 256, 512), w_lrs=tuple(float(x) for x in np.geomspace(1e-3, 3e-2, 5)), w_tokens=2_097_152,
    w_epochs=4, w_tau_epochs=0.5, w_ref_lr=float(np.geomspace(1e-3, 3e-2, 5)[2]), w_seeds=3,
    cpu_threads=0, cpu_workers=1)

CONFIGS = {"cpu": FAIR_CPU, "gpu": FAIR_GPU}


def iters_per_epoch(n: int, cfg: FairConfig) -> int:
    return (n // cfg.ctx) // cfg.batch


def epochs_at(n: int, cfg: FairConfig) -> int:
    m = iters_per_epoch(n, cfg)
    if m < 1 or cfg.ds_steps % m:
        raise ValueError(f"dataset size {n} gives {m} steps an epoch, which does not divide {cfg.ds_steps} steps: "
                         f"pick sizes that are multiples of ctx·batch = {cfg.ctx * cfg.batch} dividing the run")
    return cfg.ds_steps // m


def predictions(n: int, cfg: FairConfig) -> dict:
    """The best τ_epoch at size n by each hypothesis, anchored at the pilot's best at ds_pilot_size:
    the seeds' rule keeps τ_epoch; "a fixed fraction of the run" keeps τ_iter = τ_epoch · M."""
    m, m0 = iters_per_epoch(n, cfg), iters_per_epoch(cfg.ds_pilot_size, cfg)
    return {"tau_epoch_constant": cfg.ds_pilot_tau, "tau_iter_constant": cfg.ds_pilot_tau * m0 / m}


def tau_window(n: int, cfg: FairConfig) -> tuple:
    """τ_epoch values in steps of √2 (powers of √2) from (smaller prediction)/margin to (larger)·margin."""
    p = predictions(n, cfg).values()
    lo = math.floor(round(2 * math.log2(min(p) / cfg.ds_margin), 9))
    hi = math.ceil(round(2 * math.log2(max(p) * cfg.ds_margin), 9))
    return tuple(2.0 ** (k / 2) for k in range(lo, hi + 1))


def dataset_jobs(cfg: FairConfig) -> list[dict]:
    out = []
    for seed in range(cfg.ds_seeds):  # seed-major: a partial sweep holds whole seeds
        for n in cfg.ds_sizes:
            for tau in (*tau_window(n, cfg), None):
                out.append(dict(experiment="dataset", dataset_tokens=n, width=cfg.ds_width,
                                mode="none" if tau is None else "tau", lr=cfg.ds_lr,
                                tau_epochs=float("nan") if tau is None else tau, seed=seed, epochs=epochs_at(n, cfg)))
    return out


PILOT_TAUS = tuple(2.0 ** k for k in range(-3, 4))  # 1/8 … 8, factors of 2: wide, for where the window goes


def pilot_jobs(cfg: FairConfig) -> list[dict]:
    """The pilot that anchors the τ window (``ds_pilot_tau``): the middle size, one seed, a wide τ grid."""
    n = cfg.ds_pilot_size
    return [dict(experiment="dataset", dataset_tokens=n, width=cfg.ds_width, mode="none" if t is None else "tau",
                 lr=cfg.ds_lr, tau_epochs=float("nan") if t is None else t, seed=0, epochs=epochs_at(n, cfg))
            for t in (*PILOT_TAUS, None)
            if t is None or t * iters_per_epoch(n, cfg) >= 1.0]  # τ_iter < 1 would decay past zero in a step


WIDTH_MODES = ("lambda_fixed", "lambda_width")


def width_jobs(cfg: FairConfig) -> list[dict]:
    out = []
    small, large = cfg.w_widths[0], cfg.w_widths[-1]
    for seed in range(cfg.w_seeds):
        for w in cfg.w_widths:
            for lr in cfg.w_lrs:
                for mode in WIDTH_MODES:
                    if mode == "lambda_width" and w == small:
                        continue  # identical to lambda_fixed at the base width (tests/…/test_lm_fair.py)
                    out.append(dict(experiment="width", dataset_tokens=cfg.w_tokens, width=w, mode=mode, lr=lr,
                                    tau_epochs=cfg.w_tau_epochs, seed=seed, epochs=cfg.w_epochs))
                if w in (small, large):  # the λ = 0 control
                    out.append(dict(experiment="width", dataset_tokens=cfg.w_tokens, width=w, mode="none", lr=lr,
                                    tau_epochs=float("nan"), seed=seed, epochs=cfg.w_epochs))
    return out


def jobs(cfg: FairConfig, design: str) -> list[dict]:
    if design == "dataset":
        return dataset_jobs(cfg)
    if design == "width":
        return width_jobs(cfg)
    raise ValueError(f"design must be 'dataset' or 'width', got {design!r}")


def job_steps(job: dict, cfg: FairConfig) -> int:
    return job["epochs"] * iters_per_epoch(job["dataset_tokens"], cfg)


def estimate_seconds(job: dict, cfg: FairConfig) -> float:
    """One run's seconds: on the CPU calibration (one process beside a second), else the H100 cost model."""
    return grid.estimate_seconds(job, cfg.lm())


def plan_text(cfg: FairConfig, design: str) -> str:
    js = jobs(cfg, design)
    workers = cfg.cpu_workers if cfg.cpu_tokens_per_s else 1
    total = sum(estimate_seconds(j, cfg) for j in js)
    tokens = sum(job_steps(j, cfg) * cfg.batch * cfg.ctx for j in js)
    flops = sum(job_steps(j, cfg) * cfg.batch * cfg.ctx * flops_per_token(j["width"], cfg.layers, cfg.ctx) for j in js)
    where = "CPU" if cfg.cpu_tokens_per_s else "H100"
    lines = [f"sweep lm-fair {design} ({cfg.name}): {len(js)} runs, {tokens / 1e6:.1f}M tokens, {flops:.3g} FLOPs; "
             f"estimated {where} time {total / 60:.1f} min, about {total / 60 / workers:.1f} min wall in {workers} "
             f"process{'es' if workers > 1 else ''}"]
    if design == "dataset":
        for n in cfg.ds_sizes:
            p = predictions(n, cfg)
            lines.append(f"  N = {n:8d}: {epochs_at(n, cfg):3d} epochs of {iters_per_epoch(n, cfg)} steps; predicted best "
                         f"τ_epoch {p['tau_epoch_constant']:g} (seeds' rule) or {p['tau_iter_constant']:g} (τ_iter fixed);"
                         f" grid " + ", ".join(f"{t:.3g}" for t in tau_window(n, cfg)) + ", none")
    lines.append(f"  ({PILOT_NOTE})" if cfg is FAIR_CPU else "  (pilot first: `--pilot` runs the middle size, one seed, "
                 "τ_epoch 1/8 … 8; set ds_pilot_tau to its interpolated best before the grid)")
    return "\n".join(lines)
