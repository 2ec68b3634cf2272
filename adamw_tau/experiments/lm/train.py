"""One run of the LM sweep: a TinyGPT trained with AdamWTau on a prefix of the corpus, then
evaluated on the validation split."""
from __future__ import annotations

import math
import time

import torch

from ...optim.optimizer import AdamWTau
from ...scaling.mup import mup_param_groups
from .corpus import eval_windows
from .grid import LMConfig, steps_per_epoch
from .tiny_gpt import TinyGPT

# --- one run --------------------------------------------------------------------------------


def cosine_schedule(total: int, warmup: int):
    """LambdaLR's factor: linear warmup over ``warmup`` steps, then a cosine to zero at ``total``."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return f


@torch.no_grad()
def evaluate(model: TinyGPT, val: torch.Tensor, cfg: LMConfig, device, autocast) -> float:
    xy = eval_windows(val, cfg.ctx, cfg.val_windows).to(device=device, dtype=torch.long)
    total = 0.0
    model.eval()
    for k in range(0, xy.shape[0], 64):
        with autocast():
            total += float(model.loss(xy[k:k + 64])) * xy[k:k + 64].shape[0]
    model.train()
    return total / xy.shape[0]


def train_run(job: dict, cfg: LMConfig, corpus, device="cpu", backend=None, compile=False, tick=None) -> dict:
    """Train one run of the grid; returns the CSV fields it measures."""
    device = torch.device(device)
    backend = backend or ("auto" if device.type == "cuda" else "reference")
    n = job["dataset_tokens"]
    if n + 1 > corpus.train.numel():
        raise ValueError(f"dataset of {n} tokens asked for, but this corpus's training stream has "
                         f"{corpus.train.numel()} bytes")
    data = corpus.train[: n + 1].to(device)
    m_iters = steps_per_epoch(n, cfg)
    # a job may carry its own epoch count (a design with a fixed number of steps across sizes)
    epochs = job.get("epochs") or (cfg.ds_epochs if job["experiment"] == "dataset" else cfg.w_epochs)
    total = m_iters * epochs
    torch.manual_seed(1000 + job["seed"])
    model = TinyGPT(job["width"], cfg.layers, cfg.ctx, cfg.head_dim).to(device)
    if job["experiment"] == "width":
        with torch.device("meta"):
            base = TinyGPT(cfg.w_widths[0], cfg.layers, cfg.ctx, cfg.head_dim)
    else:
        base = model  # one width: every lr multiplier is 1; vector-like parameters are not decayed
    if job["mode"] == "lambda_width":
        # λ at the base width, scaled by width_mult on the hidden groups (their lr shrinks by it), so the
        # per-step decay lr·λ stays the same across widths; at the base width every multiplier is 1
        lam = 1.0 / (cfg.w_ref_lr * m_iters * job["tau_epochs"])
        groups = mup_param_groups(model, base, lr=job["lr"], weight_decay=lam)
    else:
        groups = mup_param_groups(model, base, lr=job["lr"])
    for g in groups:
        g.pop("param_names", None)
    if job["mode"] != "lambda_width":
        lam = float("nan")
    if job["mode"] == "none":
        opt = AdamWTau(groups, lr=job["lr"], backend=backend)
    elif job["mode"] in ("tau", "tau_fixed"):
        opt = AdamWTau(groups, lr=job["lr"], tau_epochs=job["tau_epochs"], iters_per_epoch=m_iters, backend=backend)
        lam = 1.0 / (job["lr"] * m_iters * job["tau_epochs"])
    elif job["mode"] == "lambda_fixed":
        # the λ that gives τ_epoch at the reference lr on the base width, then held as the lr moves
        lam = 1.0 / (cfg.w_ref_lr * m_iters * job["tau_epochs"])
        opt = AdamWTau(groups, lr=job["lr"], weight_decay=lam, backend=backend)
    elif job["mode"] == "lambda_width":
        opt = AdamWTau(groups, lr=job["lr"], backend=backend)
    else:
        raise ValueError(f"unknown mode {job['mode']!r}")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_schedule(total, max(1, int(cfg.warmup_frac * total))))
    step_model = torch.compile(model) if compile else model
    if device.type == "cuda":
        def autocast():
            return torch.autocast("cuda", dtype=torch.bfloat16)
    else:
        import contextlib
        autocast = contextlib.nullcontext
    starts = torch.arange(n // cfg.ctx, device=device) * cfg.ctx
    offs = torch.arange(cfg.ctx + 1, device=device)
    gen = torch.Generator().manual_seed(2000 + job["seed"])
    last = torch.zeros((), device=device)
    t0 = time.perf_counter()
    diverged = False
    for ep in range(epochs):
        perm = torch.randperm(starts.numel(), generator=gen).to(device)
        for k in range(m_iters):
            xy = data[starts[perm[k * cfg.batch:(k + 1) * cfg.batch]][:, None] + offs].long()
            with autocast():
                loss = TinyGPT.loss(step_model, xy) if compile else model.loss(xy)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ep == epochs - 1:
                last = last + loss.detach()
            if tick is not None:
                tick(job)
        if not math.isfinite(float(loss.detach())):
            diverged = True
            break
    train_loss = float("nan") if diverged else float(last) / m_iters
    val = float("nan") if diverged else evaluate(model, corpus.val, cfg, device, autocast)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return dict(weight_decay=lam, iters_per_epoch=m_iters, steps=total, epochs=epochs, train_loss=train_loss,
                val_loss=val if math.isfinite(val) else float("nan"), seconds=time.perf_counter() - t0,
                device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")

