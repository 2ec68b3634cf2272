"""Hard data for parity: the values where backends part ways if any op is off.

``hard_values`` gives fp32 values meant for a tensor of a given dtype: normals over many
decades, and in a sixth of the elements the ``SPECIAL_KINDS``, each 1/64 of them: zeros of
both signs, subnormals of fp32 and of the dtype, +-inf, NaN with random payloads and signs,
magnitudes up to the dtype's largest (3.4e38 for fp32), the largest finite and the smallest
normal value, and ties (fp32 values exactly halfway between two bf16 or fp16 values, where
rounding to nearest even decides).
"""
from __future__ import annotations

import math

import torch

from ..formats import q8_blockwise

SPECIAL_KINDS = ("+0", "-0", "fp32 subnormal", "dtype subnormal", "+-inf", "nan", "huge", "+-dtype max",
                 "tie", "+-dtype min normal")
KINDS = 64  # a kind below len(SPECIAL_KINDS) is that special value; the rest are normals

# step scalars that are fp32 subnormals (below 2^-126) once rounded: lr (so step_size, and a
# lambda decay's product) and eps. Triton's interpreter types such a Python float as fp64
# (compiled Triton: fp32), so they must reach a kernel as fp32 whatever the backend.
SUBNORMAL_SCALARS = (dict(lr=1e-40), dict(eps=1e-40), dict(lr=1e-44, eps=2.0 ** -149))

LIMITS = {  # dtype: (mantissa bits, smallest normal, largest finite)
    torch.float32: (23, 2.0 ** -126, 3.4028234663852886e38),
    torch.bfloat16: (7, 2.0 ** -126, 3.3895313892515355e38),
    torch.float16: (10, 2.0 ** -14, 65504.0),
}
_DROPPED = {torch.bfloat16: 16, torch.float16: 13}  # fp32 mantissa bits the dtype drops


def from_words(words: torch.Tensor) -> torch.Tensor:
    """int64 tensor holding uint32 words -> the fp32 values with those bits."""
    return torch.where(words >= 2 ** 31, words - 2 ** 32, words).to(torch.int32).view(torch.float32)


def ties(u: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
    """fp32 values exactly halfway between two neighbours of a format that keeps the top
    23 - ``dropped`` mantissa bits, in fp16's normal range (so ties of both bf16 and fp16);
    sign, exponent and kept bits from the random words ``u``."""
    exponent = (u >> 8) % 30 + 113  # 2^-14 .. 2^15: normal in fp16 and bf16
    kept = (((u * 0x9E3779B1) & 0xFFFFFFFF) << dropped) & 0x7FFFFF  # scrambled: the low bits of u are used above
    half = torch.ones_like(u) << (dropped - 1)
    return from_words((exponent << 23) | kept | half | (u & 0x80000000))


def _specials(kind: torch.Tensor, u: torch.Tensor, r: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The special value of each ``kind`` (an index into SPECIAL_KINDS), from random words
    ``u`` and uniforms ``r``."""
    mant, tiny, big = LIMITS[dtype]
    sign = torch.where(u & 0x80000000 != 0, -1.0, 1.0).to(torch.float32)
    fp32_sub = from_words(((u >> 3) & 0x7FFFFF).clamp(min=1) | (u & 0x80000000))
    k = ((u >> 5) % (2 ** mant - 1) + 1).to(torch.float64)  # a subnormal of the dtype: k * 2^(emin - mant)
    dtype_sub = (k * (tiny * 2.0 ** -mant)).to(torch.float32) * sign
    nan = from_words(u | 0x7F800000 | ((u & 0x7FFFFF) == 0).to(torch.int64))  # any payload, either sign
    # huge: log-uniform over the top four decades below the dtype's largest finite value
    huge = (big * torch.exp(r * (-4 * math.log(10.0)))).to(torch.float32) * sign
    if dtype == torch.float32:
        dropped = torch.where((u >> 7) & 1 == 1, 13, 16)
    else:
        dropped = torch.full_like(u, _DROPPED[dtype])
    values = (torch.zeros_like(sign), torch.full_like(sign, -0.0), fp32_sub, dtype_sub, sign * float("inf"), nan,
              huge, big * sign, ties(u, dropped), tiny * sign)
    assert len(values) == len(SPECIAL_KINDS)
    return torch.stack(values).gather(0, kind.reshape(1, -1)).reshape(-1)


def hard_values(n: int, gen: torch.Generator, *, positive: bool = False, span: float = 20.0,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """fp32 values for a tensor of ``dtype``: normals from 1e-span to 1e+span in magnitude,
    with the special kinds mixed in (module doc). ``positive``: absolute values (NaN stays NaN)."""
    x = torch.randn(n, generator=gen, dtype=torch.float64)
    scale = torch.exp((torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * (span * math.log(10.0)))
    x = (x * scale).to(torch.float32)
    kind = torch.randint(0, KINDS, (n,), generator=gen)
    where = torch.nonzero(kind < len(SPECIAL_KINDS)).reshape(-1)
    u = torch.randint(0, 2 ** 32, (len(where),), generator=gen, dtype=torch.int64)
    r = torch.rand(len(where), generator=gen, dtype=torch.float64)
    x[where] = _specials(kind[where], u, r, dtype)
    return x.abs() if positive else x


Q8_BLOCK_KINDS = ("ordinary", "non-finite", "all zeros", "one huge value", "threshold ties", "every kind",
                  "underflow", "subnormal")


def q8_blocks(x: torch.Tensor, gen: torch.Generator, fmt=None) -> torch.Tensor:
    """``hard_values`` ``x`` reshaped for 8-bit states (their values and their gradients), block
    by block of q8_blockwise.BLOCK elements, each block one of Q8_BLOCK_KINDS. A NaN makes its
    whole block NaN (the scale is NaN) and one huge value sends the rest of its block to the
    smallest codes, so each has blocks of its own: "non-finite" (x as it is: NaN, +-inf and
    every other kind), "every kind" (x with NaN and inf replaced: values to 3.4e38, subnormals),
    "one huge value" (3e38 beside small ones), "all zeros" (both signs), and "threshold ties"
    (the block max a power of two 2^e, the rest T[k] * 2^e for the signed thresholds T, so
    that x / max lands exactly on a threshold: with beta1 = 0 and no grad scale the new
    exp_avg is the gradient, and its codes follow the tie rule), "underflow" (1e15 beside
    values from about 1e-36 to 1e-24: x / max underflows to 0 in part, and as gradients their
    squares underflow, so v is 0 where m is not: the zero rules) and "subnormal" (every value
    below 2^-126: a subnormal block max). The other 9 blocks in 16 are "ordinary": 1 of them
    normals of one scale (codes spread over the map), 8 x with every magnitude above 1e30 or
    non-finite replaced by a normal."""
    codec = q8_blockwise if fmt is None else fmt.codec  # a quantized formats.registry.StateFormat: its blocks
    n = x.numel()
    kind = torch.randint(0, 16, (codec.n_blocks(n),), generator=gen)
    per = kind.repeat_interleave(codec.BLOCK)[:n]
    first = (torch.arange(n) % codec.BLOCK) == 0
    normal = torch.randn(n, generator=gen) * 10.0 ** float(torch.randint(-6, 7, (), generator=gen))
    finite = torch.where(torch.isfinite(x), x, normal)
    out = torch.where(finite.abs() <= 1e30, finite, normal)  # ordinary
    e = 2.0 ** float(torch.randint(-40, 40, (), generator=gen))
    thr = codec.thresholds(True)
    ties = torch.where(first, e, thr[torch.randint(0, thr.numel(), (n,), generator=gen)] * e)
    underflow = torch.where(first, 1e15, normal * 1e-30)
    tiny = from_words(torch.randint(0, 2 ** 23, (n,), generator=gen, dtype=torch.int64))  # fp32 subnormals, +0
    subnormal = torch.where(normal < 0, -tiny, tiny)
    for k, value in enumerate((x, torch.where(torch.rand(n, generator=gen) < 0.5, 0.0, -0.0),
                               torch.where(first, 3e38, normal * 1e-3), ties, finite, underflow, subnormal, normal)):
        out = torch.where(per == k, value, out)
    return out
