"""Clip + step: AdamWTau(max_grad_norm) against torch's clip_grad_norm_(foreach=True) + fused AdamW.

Each row times one training step's optimizer part, fp32, on the GPT-2-124M and 2000 x 4096
workloads: the step time (CUDA events on the GPU, wall time on the CPU) and the host time
(perf_counter around the call, the device synchronised before it, as host_cost.py). torch's
row is ``clip_grad_norm_(params, c, foreach=True); opt.step()``, ours ``opt.step()``. The
gradients are the same and the norm is above c, so both clip. ``clip_norm_ulps``: how many fp32
ulps our norm lies from torch's on the workload's gradients.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch

from ..core import grad_norm
from ..testing.parity import PATHS
from .timing import sync, time_ms, why
from .workloads import make_optimizer, make_params, workloads

CLIP_WORKLOADS = ("gpt2_124m", "small_2000x4096")
MAX_NORM = 0.1  # below the workloads' norms (gradients of 1e-2 N(0,1)): every step clips


@dataclass
class ClipRow:
    workload: str
    impl: str
    tensors: int
    ms: float | None = None
    host_ms: float | None = None
    clip_norm_ulps: float | None = None
    error: str | None = None


def _step_fn(impl: str, params):
    if impl == "torch:fused+clip":
        opt = make_optimizer("torch:fused", params, PATHS["fp32"])

        def step():
            torch.nn.utils.clip_grad_norm_(params, MAX_NORM, foreach=True)
            opt.step()
        return step, None
    opt = make_optimizer(impl.removesuffix("+clip"), params, PATHS["fp32"], max_grad_norm=MAX_NORM)
    return opt.step, opt


def _host_ms(fn, device: str, reps: int) -> float:
    times = []
    for i in range(3 + reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _ulps(ours: float, theirs: float) -> float:
    t = torch.tensor(theirs, dtype=torch.float32)
    ulp = (torch.nextafter(t, torch.tensor(math.inf)) - t).item()
    return abs(ours - theirs) / ulp


def clip_rows(device: str, impls, quick: bool = False, names=CLIP_WORKLOADS) -> list[ClipRow]:
    """One row per workload in ``names`` and implementation (``impls``: "ours:<backend>" names)."""
    reps, warmup = (5, 2) if quick else ((20, 3) if device == "cuda" else (5, 1))
    rows = []
    wl = workloads(device, quick)
    for wname in names:
        shapes = wl[wname]
        for impl in [f"{i}+clip" for i in impls] + ["torch:fused+clip"]:
            row = ClipRow(wname, impl, len(shapes))
            try:
                params = make_params(shapes, PATHS["fp32"], device)
                grads = [p.grad.clone() for p in params]
                torch_norm = torch.nn.utils.get_total_norm(grads, foreach=True)
                ours_norm = grad_norm.grad_norm(grads)
                row.clip_norm_ulps = _ulps(float(ours_norm), float(torch_norm))
                fn, _ = _step_fn(impl, params)

                def step():
                    for p, g in zip(params, grads):  # torch's clip writes the gradients: fresh ones each step
                        p.grad.copy_(g)
                    fn()
                row.ms = time_ms(step, device, reps, warmup, None if device == "cuda" else 1.0)
                row.host_ms = _host_ms(fn, device, reps)
            except Exception as e:  # one failing row never takes the bench down
                row.error = why(e)
            params = grads = None
            if device == "cuda":
                torch.cuda.empty_cache()
            rows.append(row)
    return rows


def format_clip_table(rows: list[ClipRow]) -> str:
    lines = ["clip + step (max_norm {}; step ms includes a gradient copy-in, host ms the call alone)".format(MAX_NORM),
             f"{'workload':18} {'impl':22} {'tensors':>7} {'step ms':>9} {'host ms':>9} {'norm ulps':>9}"]
    for r in rows:
        if r.error:
            lines.append(f"{r.workload:18} {r.impl:22} FAILED: {r.error}")
            continue
        lines.append(f"{r.workload:18} {r.impl:22} {r.tensors:7d} {r.ms:9.3f} {r.host_ms:9.3f} "
                     f"{r.clip_norm_ulps:9.1f}")
    return "\n".join(lines)
