"""Parity harness shared by the tests and the benchmark's parity column.

A *path* is one dtype combination of the contract. ``parity_bits`` runs a backend and the
reference side by side on the same hard data for several steps and counts the words whose
bits differ, over every tensor the step writes.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..core import reference
from ..core.contract import host_scalars
from ..launch import ops


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
    x = torch.where(kind == 3, torch.full_like(x, -0.0), x)  # zeros of both signs
    return x.abs() if positive else x


def grad_span(path: Path) -> float:
    """Decades of gradient magnitudes that stay finite in the path's dtype."""
    return 3.0 if path.param_dtype == torch.float16 else 6.0


def _placed(t: torch.Tensor, offset: int) -> torch.Tensor:
    """``t`` copied to a storage that starts ``offset`` elements in (0: a fresh, aligned one)."""
    if not offset:
        return t
    buf = torch.empty(t.numel() + offset, dtype=t.dtype, device=t.device)
    out = buf[offset:]
    out.copy_(t)
    return out


GUARD_FILL = 1.5  # exact in every dtype; a kernel step moves it


def _guarded(t: torch.Tensor, offset: int, guard: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``t`` copied into a buffer ``offset`` elements in, with ``guard`` elements after it; the
    copy and the views of the buffer around it (filled with GUARD_FILL), which no step may write."""
    buf = torch.full((offset + t.numel() + guard,), GUARD_FILL, dtype=t.dtype, device=t.device)
    out = buf[offset:offset + t.numel()]
    out.copy_(t.reshape(-1))
    return out.view(t.shape), [g for g in (buf[:offset], buf[offset + t.numel():]) if g.numel()]


def make_bucket(sizes, path: Path, *, amsgrad: bool, device="cpu", seed: int = 0, offsets=None,
                guard: int = 0) -> dict:
    """Hard data for one bucket; ``offsets[i]`` elements of storage offset misalign tensor i.
    ``guard`` > 0: every tensor sits in a buffer with ``guard`` elements after it (and its
    offset before), and the bucket's ``"guards"`` are the views of that memory, so a kernel
    that writes out of bounds differs from the reference there (``differing_words``)."""
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
    offsets = offsets or [0] * len(sizes)
    if guard:
        guards = []
        for key, ts in out.items():
            placed = [_guarded(t, o, guard) for t, o in zip(ts, offsets)]
            out[key] = [t for t, _ in placed]
            guards += [g for _, gs in placed for g in gs]
        out["guards"] = guards
    elif any(offsets):
        out = {k: [_placed(t, o) for t, o in zip(ts, offsets)] for k, ts in out.items()}
    return out


def _words(t: torch.Tensor) -> torch.Tensor:
    view = {4: torch.int32, 2: torch.int16}[t.element_size()]
    return t.detach().contiguous().reshape(-1).view(view)


def differing_words(a: dict, b: dict) -> int:
    """Words whose bits differ; two NaNs count as equal whatever their payloads. The tensors
    may sit on different devices (compared on the CPU)."""
    n = 0
    for key in a:
        for x, y in zip(a[key], b[key]):
            x, y = x.detach().cpu(), y.detach().cpu()
            both_nan = (torch.isnan(x) & torch.isnan(y)).reshape(-1)
            n += int(((_words(x) != _words(y)) & ~both_nan).sum())
    return n


def clone_bucket(b: dict) -> dict:
    return {k: [t.clone() for t in v] for k, v in b.items()}


def random_config(rng) -> dict:
    """One randomized parity case (``rng``: random.Random): a path, flags, hyperparameters and
    odd sizes, some tensors misaligned by a storage offset."""
    n = rng.randint(1, 10)
    sizes = [rng.choice([1, 3, 7, 8, 17, 4095, 4096, 4097, 10_001, rng.randint(1, 70_000)]) for _ in range(n)]
    return dict(path=rng.choice(list(PATHS)), sizes=sizes,
                offsets=[rng.choice([0, 0, 0, 1, 3]) for _ in sizes],
                amsgrad=rng.random() < 0.4, maximize=rng.random() < 0.5,
                decay=rng.choice(["tau", "lambda", "none"]),
                grad_scale=rng.choice([None, None, 65536.0, 3.0]),
                betas=(rng.choice([0.0, 0.0, 0.9, 0.5]), rng.choice([0.999, 0.95, 0.0])),
                eps=rng.choice([1e-8, 0.0, 1e-30]), grad_span_extra=rng.choice([0.0, 0.0, 12.0]),
                steps=rng.randint(2, 4))


def random_parity(backend: str, device, seed: int) -> tuple[dict, int]:
    """The config drawn from ``seed`` and the words by which ``backend`` differs from the reference."""
    import random
    cfg = random_config(random.Random(seed))
    path = PATHS[cfg["path"]]
    extra = cfg["grad_span_extra"] if path.param_dtype != torch.float16 else 0.0
    bits = parity_bits(backend, path, cfg["sizes"], steps=cfg["steps"], device=device, amsgrad=cfg["amsgrad"],
                       maximize=cfg["maximize"], decay=cfg["decay"], grad_scale=cfg["grad_scale"], seed=seed,
                       betas=cfg["betas"], eps=cfg["eps"], offsets=cfg["offsets"], grad_span_extra=extra)
    return cfg, bits


def parity_bits(backend: str | Callable, path: Path, sizes, *, steps: int = 3, device="cpu", amsgrad: bool = False,
                maximize: bool = False, decay: str = "tau", grad_scale: float | None = None,
                seed: int = 0, check_every_step: bool = True, betas=(0.9, 0.999), eps: float = 1e-8,
                offsets=None, grad_span_extra: float = 0.0, guard: int = 0,
                found_inf: float | None = None) -> int:
    """Words differing between ``backend`` and the reference after each of ``steps`` steps (summed).

    ``backend``: a backend's name, or a step function with the reference's signature.
    ``offsets``: storage offsets (elements) that misalign the tensors; ``grad_span_extra``:
    decades of gradient magnitude beyond the path's usual span; ``guard``: elements of memory
    after each written tensor that must stay as they were (make_bucket), counted if not;
    ``found_inf``: GradScaler's flag for every step (nonzero: every step is skipped).
    """
    fn = backend if callable(backend) else ops.step_function(backend)
    ours = make_bucket(sizes, path, amsgrad=amsgrad, device=device, seed=seed, offsets=offsets, guard=guard)
    ref = clone_bucket(ours)
    gen = torch.Generator().manual_seed(seed + 1)
    ids = list(range(7, 7 + len(sizes)))
    scale = None if grad_scale is None else torch.tensor([grad_scale], dtype=torch.float32, device=device)
    inf = None if found_inf is None else torch.tensor([found_inf], dtype=torch.float32, device=device)
    total = 0
    for t in range(1, steps + 1):
        grads = [_placed(hard_values(n, gen, span=grad_span(path) + grad_span_extra).to(path.param_dtype).to(device),
                         offsets[i] if offsets else 0) for i, n in enumerate(sizes)]
        if t == steps:  # a zero gradient: -0.0 under maximize is where compiled Triton once differed
            grads = [torch.zeros_like(g) for g in grads]
        lr = 1e-3 * (1.0 + 0.37 * t)
        s = host_scalars(lr=lr, lr_peak=5e-3, beta1=betas[0], beta2=betas[1], eps=eps, step=t, decay_mode=decay,
                         tau_iters=300.0, weight_decay=0.1).as_tensor(device)
        for impl, st in ((fn, ours), (reference.adamw_step_, ref)):
            impl(st["params"], grads, st["exp_avgs"], st["exp_avg_sqs"], st["max_exp_avg_sqs"], st["masters"],
                 s, ids, 1234, amsgrad, maximize, path.stochastic_rounding, scale, inf)
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
    ops.step_function(backend)([p], [g], [m], [v], [], [], s, [0], 0, False, False, False, None, None)
    reference.adamw_step_(ref[0], ref[1], ref[2], ref[3], [], [], s, [0, 1], 0, False, False, False, None, None)
    ours = {"p": [p[s] for s in pieces], "m": [m[s] for s in pieces], "v": [v[s] for s in pieces]}
    return differing_words(ours, {"p": ref[0], "m": ref[2], "v": ref[3]})
