"""Host cost of step(): the benchmark that shows on a CPU what a GPU's step pays on the host.

Two measurements, both in ``adamw-tau bench`` (``--host-only`` for these alone) and both
runnable without a GPU, so a regression in µs per tensor shows in CI:

* ``host_cost``: step() on 1 to 2000 tiny fp32 tensors, the device idle, so the time is
  the host's; the slope is the cost of one more tensor. Measured twice: with the same
  gradient tensors every step, and with new ones at other addresses every step (two sets
  in turn), as after ``zero_grad()`` when the allocator hands out other blocks.
* ``client_cost``: a small language model's step as a Hugging Face user runs it: GPT-2's
  shapes at 4 layers and width 256 (52 tensors, 4.5M parameters), weights with decay and
  biases/norms without (two param groups), a cosine schedule changing lr every step. The
  step is timed with the device synchronised after it, so the kernels count too.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch

from ..optim.optimizer import AdamWTau
from ..testing.parity import PATHS
from .timing import sync, why
from .workloads import gpt2_shapes, make_optimizer, make_params

HOST_COUNTS = (1, 52, 148, 2000)


@dataclass
class HostRow:
    impl: str
    tensors: int
    ms: float | None = None
    error: str | None = None
    new_grads: bool = False  # new gradient tensors, at other addresses, every step


def host_cost(device: str, impls, counts=HOST_COUNTS, reps: int = 50, numel: int = 16,
              new_grads=(False, True)) -> list[HostRow]:
    """Median wall time of one step() over ``counts`` tensors of ``numel`` fp32 elements,
    the device synchronised before each call (perf_counter around the call alone), for
    each ``new_grads`` mode."""
    rows = []
    for fresh in new_grads:
        for impl in impls:
            for n in counts:
                row = HostRow(impl, n, new_grads=fresh)
                try:
                    params = make_params([(numel,)] * n, PATHS["fp32"], device)
                    pools = [[p.grad for p in params], [p.grad.clone() for p in params]]
                    opt = make_optimizer(impl, params, PATHS["fp32"])
                    times = []
                    for i in range(3 + (reps if n < 1000 else max(5, reps // 4))):
                        if fresh:  # outside the timing, as backward() would be
                            for p, g in zip(params, pools[i % 2]):
                                p.grad = g
                        sync(device)
                        t0 = time.perf_counter()
                        opt.step()
                        if i >= 3:
                            times.append(time.perf_counter() - t0)
                    row.ms = statistics.median(times) * 1e3
                except Exception as e:
                    row.error = why(e)
                rows.append(row)
    return rows


def us_per_tensor(rows: list[HostRow], impl: str, new_grads: bool = False) -> float | None:
    """The slope from the fewest to the most tensors, in µs per tensor."""
    mine = sorted((r for r in rows if r.impl == impl and r.new_grads == new_grads and r.ms is not None),
                  key=lambda r: r.tensors)
    if len(mine) < 2:
        return None
    return (mine[-1].ms - mine[0].ms) / (mine[-1].tensors - mine[0].tensors) * 1e3


def format_host_table(rows: list[HostRow]) -> str:
    counts = sorted({r.tensors for r in rows})
    kinds = list(dict.fromkeys((r.impl, r.new_grads) for r in rows))
    lines = ["host cost: median step() ms on tiny fp32 tensors (device idle), and µs per added tensor; "
             "'new grads': new gradient tensors at other addresses every step",
             f"{'impl':27}" + "".join(f"{n:>10}" for n in counts) + f"{'µs/tensor':>11}"]
    for impl, fresh in kinds:
        cells = []
        for n in counts:
            r = next((r for r in rows if (r.impl, r.new_grads, r.tensors) == (impl, fresh, n)), None)
            cells.append(f"{r.ms:10.3f}" if r is not None and r.ms is not None else f"{'failed':>10}")
        slope = us_per_tensor(rows, impl, fresh)
        label = impl + (", new grads" if fresh else "")
        lines.append(f"{label:27}" + "".join(cells) + (f"{slope:11.2f}" if slope is not None else f"{'-':>11}"))
    return "\n".join(lines)


# --- a client's step ---------------------------------------------------------------------------

CLIENT = "hf_gpt2_4x256"


@dataclass
class ClientRow:
    impl: str
    tensors: int
    params: int
    ms: float | None = None
    vs_torch_fused: float | None = None  # ours / torch fused: below 1 is faster
    error: str | None = None


def client_model(device: str, seed: int = 0):
    """GPT-2's parameter shapes at 4 layers, width 256, a 4096-token vocabulary, with gradients."""
    gen = torch.Generator(device=device).manual_seed(seed)
    params = []
    for s in gpt2_shapes(d=256, vocab=4096, ctx=1024, layers=4):
        p = torch.randn(s, device=device, generator=gen).requires_grad_()
        p.grad = torch.randn(s, device=device, generator=gen) * 1e-2
        params.append(p)
    return params


def client_optimizer(impl: str, params, lr: float = 6e-4):
    """Two groups as transformers' Trainer makes them: matrices decay, vectors do not."""
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    kind, name = impl.split(":")
    if kind == "ours":
        return AdamWTau([{"params": decay, "tau_iters": 1.0 / (lr * 0.1)}, {"params": rest, "weight_decay": 0.0}],
                        lr=lr, backend=name)
    flags = {"foreach": dict(foreach=True), "fused": dict(fused=True)}[name]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                             lr=lr, **flags)


def client_cost(device: str, impls, reps: int = 50, total_steps: int = 1000) -> list[ClientRow]:
    """Median step() ms of the client, the device synchronised before and after each step,
    a cosine LambdaLR stepped between steps (not timed)."""
    rows = []
    for impl in impls:
        row = ClientRow(impl, 0, 0)
        try:
            params = client_model(device)
            row.tensors, row.params = len(params), sum(p.numel() for p in params)
            opt = client_optimizer(impl, params)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total_steps) / total_steps)))
            times = []
            for i in range(reps + 3):
                sync(device)
                t0 = time.perf_counter()
                opt.step()
                sync(device)
                if i >= 3:
                    times.append(time.perf_counter() - t0)
                sched.step()
            row.ms = statistics.median(times) * 1e3
        except Exception as e:
            row.error = why(e)
        rows.append(row)
    fused = next((r.ms for r in rows if r.impl == "torch:fused" and r.ms), None)
    for r in rows:
        if fused and r.ms:
            r.vs_torch_fused = r.ms / fused
    return rows


def format_client_table(rows: list[ClientRow]) -> str:
    if not rows:
        return ""
    r0 = rows[0]
    lines = [f"client step: {CLIENT} (GPT-2 shapes, 4 layers, width 256: {r0.tensors} tensors, "
             f"{r0.params / 1e6:.1f}M params, 2 groups, cosine LambdaLR); median step() ms, device synchronised",
             f"{'impl':16}{'ms':>10}{'/ torch fused':>15}"]
    for r in rows:
        if r.ms is None:
            lines.append(f"{r.impl:16}{'failed':>10}  {r.error}")
        else:
            ratio = f"{r.vs_torch_fused:15.2f}" if r.vs_torch_fused else f"{'-':>15}"
            lines.append(f"{r.impl:16}{r.ms:10.3f}{ratio}")
    return "\n".join(lines)
