"""Parity harness shared by the tests and the benchmark's parity column.

A *path* is one dtype combination of the contract. ``parity_bits`` runs a backend and the
reference side by side on the same hard data for several steps and counts the words whose
bits differ, over every tensor the step writes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import backends, reference
from .contract import host_scalars


@dataclass(frozen=True)
class Path:
    name: str
    param_dtype: torch.dtype = torch.float32
    state_dtype: torch.dtype = torch.float32
    master: bool = False
    stochastic_rounding: bool = False


PATHS = {p.name: p for p in (
    Path("fp32"),
    Path("fp32_bf16_states", state_dtype=torch.bfloat16),
    Path("bf16_master", torch.bfloat16, master=True),
    Path("fp16_master", torch.float16, master=True),
    Path("bf16_states", torch.bfloat16, torch.bfloat16),
    Path("bf16_sr", torch.bfloat16, torch.bfloat16, stochastic_rounding=True),
    Path("fp16_sr", torch.float16, torch.float32, stochastic_rounding=True),
)}


def hard_values(n: int, gen: torch.Generator, *, positive: bool = False, span: float = 20.0) -> torch.Tensor:
    """fp32 values over many magnitudes: normals from 1e-span to 1e+span, subnormals, zeros, signs."""
    x = torch.randn(n, generator=gen, dtype=torch.float64)
    x = x * torch.pow(10.0, (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * span)
    kind = torch.randint(0, 16, (n,), generator=gen)
    sub = (torch.randint(1, 2 ** 23, (n,), generator=gen, dtype=torch.int64)).to(torch.int32).view(torch.float32)
    x = x.to(torch.float32)
    x = torch.where(kind == 0, torch.zeros_like(x), x)
    x = torch.where(kind == 1, sub, x)
    x = torch.where(kind == 2, -x, x)
    return x.abs() if positive else x


def grad_span(path: Path) -> float:
    """Decades of gradient magnitudes that stay finite in the path's dtype."""
    return 3.0 if path.param_dtype == torch.float16 else 6.0


def make_bucket(sizes, path: Path, *, amsgrad: bool, device="cpu", seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    out = dict(params=[], exp_avgs=[], exp_avg_sqs=[], max_exp_avg_sqs=[], masters=[])
    for n in sizes:
        w = hard_values(n, gen, span=3.0 if path.param_dtype == torch.float16 else 4.0)
        out["params"].append(w.to(path.param_dtype).to(device))
        if path.master:
            out["masters"].append(w.to(device))
        out["exp_avgs"].append(hard_values(n, gen, span=6.0).to(path.state_dtype).to(device))
        v = hard_values(n, gen, positive=True, span=10.0)
        out["exp_avg_sqs"].append(v.to(path.state_dtype).to(device))
        if amsgrad:
            out["max_exp_avg_sqs"].append((v * torch.rand(n, generator=gen) * 2).to(path.state_dtype).to(device))
    return out


def _words(t: torch.Tensor) -> torch.Tensor:
    view = {4: torch.int32, 2: torch.int16}[t.element_size()]
    return t.detach().contiguous().reshape(-1).view(view)


def differing_words(a: dict, b: dict) -> int:
    """Words whose bits differ; two NaNs count as equal whatever their payloads."""
    n = 0
    for key in a:
        for x, y in zip(a[key], b[key]):
            both_nan = (torch.isnan(x) & torch.isnan(y)).reshape(-1).cpu()
            n += int(((_words(x).cpu() != _words(y).cpu()) & ~both_nan).sum())
    return n


def clone_bucket(b: dict) -> dict:
    return {k: [t.clone() for t in v] for k, v in b.items()}


def parity_bits(backend: str, path: Path, sizes, *, steps: int = 3, device="cpu", amsgrad: bool = False,
                maximize: bool = False, decay: str = "tau", grad_scale: float | None = None,
                seed: int = 0, check_every_step: bool = True) -> int:
    """Words differing between ``backend`` and the reference after each of ``steps`` steps (summed)."""
    fn = backends.step_function(backend)
    ours = make_bucket(sizes, path, amsgrad=amsgrad, device=device, seed=seed)
    ref = clone_bucket(ours)
    gen = torch.Generator().manual_seed(seed + 1)
    ids = list(range(7, 7 + len(sizes)))
    scale = None if grad_scale is None else torch.tensor([grad_scale], dtype=torch.float32, device=device)
    total = 0
    for t in range(1, steps + 1):
        grads = [hard_values(n, gen, span=grad_span(path)).to(path.param_dtype).to(device) for n in sizes]
        lr = 1e-3 * (1.0 + 0.37 * t)
        s = host_scalars(lr=lr, lr_peak=5e-3, beta1=0.9, beta2=0.999, eps=1e-8, step=t, decay_mode=decay,
                         tau_iters=300.0, weight_decay=0.1).as_tensor(device)
        for impl, st in ((fn, ours), (reference.adamw_step_, ref)):
            impl(st["params"], grads, st["exp_avgs"], st["exp_avg_sqs"], st["max_exp_avg_sqs"], st["masters"],
                 s, ids, 1234, amsgrad, maximize, path.stochastic_rounding, scale, None)
        if check_every_step or t == steps:
            total += differing_words(ours, ref)
    return total


def check_past_2_31(backend: str, device="cuda") -> int:
    """Step one fp32 tensor of 2^31 + 4097 elements; compare its head and tail with the reference.

    The per-element math does not depend on the neighbours, so the reference on slices is
    the reference on the whole tensor; a 32-bit offset would write the tail over the head.
    """
    n = 2 ** 31 + 4097
    gen = torch.Generator(device=device).manual_seed(0)
    p = torch.randn(n, device=device, generator=gen)
    g = torch.randn(n, device=device, generator=gen)
    m = torch.randn(n, device=device, generator=gen)
    v = torch.rand(n, device=device, generator=gen)
    pieces = [slice(0, 8192), slice(2 ** 31 - 4096, n)]
    ref = [[t[s].clone() for s in pieces] for t in (p, g, m, v)]
    s = host_scalars(lr=1e-3, lr_peak=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, step=1, decay_mode="tau",
                     tau_iters=100.0).as_tensor(device)
    backends.step_function(backend)([p], [g], [m], [v], [], [], s, [0], 0, False, False, False, None, None)
    reference.adamw_step_(ref[0], ref[1], ref[2], ref[3], [], [], s, [0, 1], 0, False, False, False, None, None)
    ours = {"p": [p[s] for s in pieces], "m": [m[s] for s in pieces], "v": [v[s] for s in pieces]}
    return differing_words(ours, {"p": ref[0], "m": ref[2], "v": ref[3]})
