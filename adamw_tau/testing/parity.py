"""Parity harness shared by the tests and the benchmark's parity column.

A *path* is one dtype combination of the contract. ``parity_bits`` runs a backend and the
reference side by side on the same hard data (``hard_data``) for several steps and counts
the words whose bits differ, over every tensor the step writes. The scalars reach a kernel
as a tensor (the list-form op: torch.compile, device-counted steps) or by value (host
scalars as kernel arguments: the optimizer's eager step); ``scalars=`` picks which.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..core import reference
from ..core.contract import host_scalars
from ..formats import bf16_remainder, registry
from ..launch import ops
from .bits import differing_lists
from .hard_data import hard_values, q8_blocks

SCALE_KEYS = {"exp_avgs": "exp_avg_scales", "exp_avg_sqs": "exp_avg_sq_scales",
              "max_exp_avg_sqs": "max_exp_avg_sq_scales"}
_MOMENT = {"exp_avgs": "exp_avg", "exp_avg_sqs": "exp_avg_sq", "max_exp_avg_sqs": "max_exp_avg_sq"}


@dataclass(frozen=True)
class Path:
    name: str
    param_dtype: torch.dtype = torch.float32
    state_dtype: torch.dtype | str = torch.float32  # a state_dtype option (formats.registry): "8bit", ...
    master: bool | str = False   # True: an fp32 master; "remainder": bf16 param + int16 remainder
    stochastic_rounding: bool = False

    @property
    def format(self) -> registry.StateFormat:
        return registry.of_option(self.state_dtype)

    @property
    def quantized(self) -> bool:
        return self.format.quantized


def _quantized_paths(fmt: registry.StateFormat) -> tuple[Path, ...]:
    """The paths every quantized format runs: fp32 params, bf16 with each master form, bf16 rounded
    stochastically; named by the format's option (``fp32_8bit``, ``bf16_master_8bit``, ...)."""
    o = fmt.option
    return (Path(f"fp32_{o}", state_dtype=o),
            Path(f"bf16_master_{o}", torch.bfloat16, o, master=True),
            Path(f"bf16_sr_{o}", torch.bfloat16, o, stochastic_rounding=True),
            Path(f"bf16_remainder_{o}", torch.bfloat16, o, master="remainder"))


# the plain paths (value states of each dtype with each master form), then every quantized
# format's paths, generated from the registry: a new format is never left out
PATHS = {p.name: p for p in (
    Path("fp32"),
    Path("fp32_bf16_states", state_dtype=torch.bfloat16),
    Path("bf16_master", torch.bfloat16, master=True),
    Path("bf16_remainder", torch.bfloat16, master="remainder"),
    Path("bf16_remainder_bf16_states", torch.bfloat16, torch.bfloat16, master="remainder"),
    Path("fp16_master", torch.float16, master=True),
    Path("bf16_states", torch.bfloat16, torch.bfloat16),
    Path("bf16_sr", torch.bfloat16, torch.bfloat16, stochastic_rounding=True),
    Path("fp16_sr", torch.float16, torch.float32, stochastic_rounding=True),
    Path("fp16_states", torch.float16, torch.float16),  # torch's default for fp16 params
    *(p for fmt in registry.QUANTIZED for p in _quantized_paths(fmt)),
)}

# "tensor": the scalars as an fp32 tensor the kernel reads (the list-form op); "values": host
# scalars passed by value (the optimizer's eager launches; Triton's HOST_SCALARS=True variant)
SCALAR_MODES = ("tensor", "values")
# GradScaler scales in parity cases: powers of two divide exactly; the others round
GRAD_SCALES = (65536.0, 3.0, 0.7, 1e-3)


def grad_span(path: Path) -> float:
    """Decades of gradient magnitudes that stay mostly finite in the path's dtype."""
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
    that writes out of bounds differs from the reference there (``differing_words``).

    max_exp_avg_sq is mostly near exp_avg_sq (either side of it), with its own special values
    where exp_avg_sq has ordinary ones (a NaN on either side of the max)."""
    gen = torch.Generator().manual_seed(seed)
    out = dict(params=[], exp_avgs=[], exp_avg_sqs=[], max_exp_avg_sqs=[], masters=[])
    fmt = path.format
    pd, sd = path.param_dtype, (torch.float32 if path.quantized else path.state_dtype)
    states = (lambda x: q8_blocks(x, gen, fmt)) if path.quantized else (lambda x: x.to(sd))
    for n in sizes:
        w = hard_values(n, gen, span=3.0 if pd == torch.float16 else 4.0, dtype=pd)
        if path.master == "remainder":  # the master's every bit pattern: remainders of both signs
            param, rem = bf16_remainder.split(w)
            out["params"].append(param.to(device))
            out["masters"].append(rem.to(device))
        else:
            out["params"].append(w.to(pd).to(device))
            if path.master:
                out["masters"].append(w.to(device))
        out["exp_avgs"].append(states(hard_values(n, gen, span=6.0, dtype=sd)).to(device))
        v = states(hard_values(n, gen, positive=True, span=10.0, dtype=sd)).abs()
        out["exp_avg_sqs"].append(v.to(device))
        if amsgrad:
            near = v * torch.rand(n, generator=gen) * 2
            own = states(hard_values(n, gen, positive=True, span=10.0, dtype=sd)).abs()
            vmax = torch.where(torch.rand(n, generator=gen) < 0.2, own, near)
            out["max_exp_avg_sqs"].append(vmax.to(sd).to(device))
    if path.quantized:  # codes and scales of those values: what a quantized state holds
        for key, scale_key in SCALE_KEYS.items():
            pairs = [fmt.encode(x, _MOMENT[key]) for x in out[key]]
            out[key] = [c for c, _ in pairs]
            out[scale_key] = [s for _, s in pairs]
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


def differing_words(a: dict, b: dict) -> int:
    """Words whose bits differ over two buckets' lists (``make_bucket``'s keys); two NaNs count
    as equal whatever their payloads. The tensors may sit on different devices."""
    return sum(differing_lists(a[key], b[key]) for key in a)


def scale_lists(bucket: dict) -> dict:
    """The quantized scale lists of a bucket, as the step functions' keyword arguments ({} for other paths)."""
    return {k: bucket[k] for k in SCALE_KEYS.values() if bucket.get(k)}


def clone_bucket(b: dict) -> dict:
    return {k: [t.clone() for t in v] for k, v in b.items()}


def random_config(rng) -> dict:
    """One randomized parity case (``rng``: random.Random): a path, flags, hyperparameters
    (beta1 = 0, beta2 = 0, eps = 0 among them), a GradScaler scale (not always a power of
    two), a skipped step, how the scalars reach the kernel, and odd sizes, some tensors
    misaligned by a storage offset."""
    n = rng.randint(1, 10)
    sizes = [rng.choice([1, 3, 7, 8, 17, 4095, 4096, 4097, 10_001, rng.randint(1, 70_000)]) for _ in range(n)]
    steps = rng.randint(2, 4)
    return dict(path=rng.choice(list(PATHS)), sizes=sizes,
                offsets=[rng.choice([0, 0, 0, 1, 3]) for _ in sizes],
                amsgrad=rng.random() < 0.4, maximize=rng.random() < 0.5,
                decay=rng.choice(["tau", "lambda", "none"]),
                grad_scale=rng.choice((None, None) + GRAD_SCALES),
                betas=(rng.choice([0.0, 0.0, 0.9, 0.5]), rng.choice([0.999, 0.95, 0.0])),
                eps=rng.choice([1e-8, 0.0, 1e-30]), grad_span_extra=rng.choice([0.0, 0.0, 12.0]),
                steps=steps, skip_step=rng.choice([None, None, None, rng.randint(1, steps)]),
                scalars=rng.choice(SCALAR_MODES))


def random_parity(backend: str, device, seed: int) -> tuple[dict, int]:
    """The config drawn from ``seed`` and the words by which ``backend`` differs from the reference."""
    import random
    cfg = random_config(random.Random(seed))
    path = PATHS[cfg["path"]]
    extra = cfg["grad_span_extra"] if path.param_dtype != torch.float16 else 0.0
    bits = parity_bits(backend, path, cfg["sizes"], steps=cfg["steps"], device=device, amsgrad=cfg["amsgrad"],
                       maximize=cfg["maximize"], decay=cfg["decay"], grad_scale=cfg["grad_scale"], seed=seed,
                       betas=cfg["betas"], eps=cfg["eps"], offsets=cfg["offsets"], grad_span_extra=extra,
                       skip_step=cfg["skip_step"], scalars=cfg["scalars"])
    return cfg, bits


def _by_value(backend: str):
    """``backend``'s step with host scalars passed by value, launched from tables as the
    optimizer's eager step launches (the list-form op takes a tensor)."""
    def step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, scalars, *rest, **scales):
        ops.run_bucket(backend, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, scalars, *rest,
                       **scales)
    return step


def step_both(backend: str | Callable, ours: dict, ref: dict, grads, hs, *, scalars: str = "tensor", ids=None,
              seed: int = 1234, amsgrad: bool = False, maximize: bool = False, stochastic_rounding: bool = False,
              grad_scale=None, found_inf=None, state_format=None, grad_coef=None) -> int:
    """One step of ``backend`` on bucket ``ours`` and of the reference on ``ref`` (make_bucket's
    keys), the same gradients and host scalars ``hs`` (contract.StepScalars); returns the
    words in which the two buckets differ after it. ``scalars``: ``SCALAR_MODES`` (the
    reference always reads a tensor); ``grad_coef``: a clipping coefficient tensor."""
    if scalars not in SCALAR_MODES:
        raise ValueError(f"scalars must be one of {SCALAR_MODES}, got {scalars!r}")
    by_value = scalars == "values" and not callable(backend) and backend != "reference"
    fn = backend if callable(backend) else (_by_value(backend) if by_value else ops.step_function(backend))
    device = ours["params"][0].device if ours["params"] else "cpu"
    s = hs.as_tensor(device)
    ids = list(range(len(ours["params"]))) if ids is None else ids
    coef = {} if grad_coef is None else {"grad_coef": grad_coef}
    for impl, st, sc in ((fn, ours, hs if by_value else s), (reference.adamw_step_, ref, s)):
        impl(st["params"], grads, st["exp_avgs"], st["exp_avg_sqs"], st["max_exp_avg_sqs"], st["masters"],
             sc, ids, seed, amsgrad, maximize, stochastic_rounding, grad_scale, found_inf, **scale_lists(st),
             state_format=state_format, **coef)
    return differing_words(ours, ref)


def parity_bits(backend: str | Callable, path: Path, sizes, *, steps: int = 3, device="cpu",
                amsgrad: bool = False, maximize: bool = False, decay: str = "tau", grad_scale: float | None = None,
                seed: int = 0, check_every_step: bool = True, betas=(0.9, 0.999), eps: float = 1e-8,
                offsets=None, grad_span_extra: float = 0.0, skip_step: int | None = None,
                scalars: str = "tensor", guard: int = 0, found_inf: float | None = None,
                lr: float = 1e-3, grad_coef: float | None = None) -> int:
    """Words differing between ``backend`` and the reference after each of ``steps`` steps (summed).

    ``offsets``: storage offsets (elements) that misalign the tensors; ``grad_span_extra``:
    decades of gradient magnitude beyond the path's usual span; ``skip_step``: a step with
    found_inf = 1 (every step then gets a found_inf tensor); ``found_inf``: GradScaler's flag
    for every step instead (nonzero: every step is skipped); ``scalars``: ``SCALAR_MODES``;
    ``backend``: a backend's name, or a step function with the reference's signature;
    ``guard``: elements of memory after each written tensor that must stay as they were
    (make_bucket), counted if not; ``lr``: the lr at step t is (1 + 0.37 t) lr; ``grad_coef``: a
    gradient clipping coefficient applied every step (launch/clipping.py).
    The last step's gradients are zeros of both signs.
    """
    ours = make_bucket(sizes, path, amsgrad=amsgrad, device=device, seed=seed, offsets=offsets, guard=guard)
    ref = clone_bucket(ours)
    gen = torch.Generator().manual_seed(seed + 1)
    ids = list(range(7, 7 + len(sizes)))
    scale = None if grad_scale is None else torch.tensor([grad_scale], dtype=torch.float32, device=device)
    coef = None if grad_coef is None else torch.tensor(grad_coef, dtype=torch.float32, device=device)
    total = 0
    for t in range(1, steps + 1):
        span = grad_span(path) + grad_span_extra
        grads = [hard_values(n, gen, span=span, dtype=path.param_dtype) for n in sizes]
        if path.quantized:
            grads = [q8_blocks(g, gen, path.format) for g in grads]
        if t == steps:  # zero gradients: -0.0 under maximize is where compiled Triton once differed
            grads = [torch.where(torch.rand(n, generator=gen) < 0.5, 0.0, -0.0) for n in sizes]
        grads = [_placed(g.to(path.param_dtype).to(device), offsets[i] if offsets else 0) for i, g in enumerate(grads)]
        if skip_step is not None:
            inf = torch.tensor([float(t == skip_step)], device=device)
        else:
            inf = None if found_inf is None else torch.tensor([found_inf], dtype=torch.float32, device=device)
        hs = host_scalars(lr=lr * (1.0 + 0.37 * t), lr_peak=5e-3, beta1=betas[0], beta2=betas[1], eps=eps, step=t,
                          decay_mode=decay, tau_iters=300.0, weight_decay=0.1)
        bits = step_both(backend, ours, ref, grads, hs, scalars=scalars, ids=ids, amsgrad=amsgrad, maximize=maximize,
                         stochastic_rounding=path.stochastic_rounding, grad_scale=scale, found_inf=inf,
                         state_format=path.format.id, grad_coef=coef)
        if check_every_step or t == steps:
            total += bits
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
