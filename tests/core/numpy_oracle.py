"""An independent evaluation of docs/numerics.md in NumPy and plain Python: no torch, and
nothing from adamw_tau. The host scalars and the stochastic-rounding hash are written here
again from the document; test_oracle.py checks them on known answers written down by hand.

Each fp32 op is done in float64 on fp32 values and rounded to fp32 right after (exact for
+ - * / sqrt: 53 >= 2 * 24 + 2), so this shares nothing with the torch reference but the
document.
"""
from __future__ import annotations

import math
import struct
from typing import NamedTuple

import numpy as np

MASK32 = 0xFFFFFFFF


# --- the hash (numerics.md, "Writing the parameter") -------------------------------------------
def mix32(x: int) -> int:
    """lowbias32 on a Python int, mod 2^32."""
    x &= MASK32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & MASK32
    x ^= x >> 15
    x = (x * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


def sr_key(seed: int, step: int, param_id: int) -> int:
    """key = mix32(seed_lo ^ mix32(seed_hi ^ mix32(step ^ mix32(param_id))))."""
    seed &= (1 << 64) - 1
    seed_lo, seed_hi = seed & MASK32, seed >> 32
    return mix32(seed_lo ^ mix32(seed_hi ^ mix32((step & MASK32) ^ mix32(param_id))))


def mix32_np(x: np.ndarray) -> np.ndarray:
    """lowbias32 on a uint64 array holding uint32 values."""
    x = x.astype(np.uint64) & np.uint64(MASK32)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & np.uint64(MASK32)
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & np.uint64(MASK32)
    return x ^ (x >> np.uint64(16))


def sr_bits(key: int, index: np.ndarray) -> np.ndarray:
    """bits = mix32(mix32(hi32(i) ^ key) ^ lo32(i)) for 64-bit indices i (uint64 array out)."""
    i = np.asarray(index, dtype=np.uint64)
    hi, lo = i >> np.uint64(32), i & np.uint64(MASK32)
    return mix32_np(mix32_np(hi ^ np.uint64(key)) ^ lo)


# --- host scalars (numerics.md, "Host scalars") ------------------------------------------------
def f32(x: float) -> float:
    """x rounded once to the nearest fp32, ties to even (struct's C cast)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


class Scalars(NamedTuple):
    step_size: float
    bc2_sqrt: float
    decay: float
    beta1: float
    one_minus_beta1: float
    beta2: float
    one_minus_beta2: float
    eps: float
    step: int


def host_scalars(*, lr: float, lr_peak: float, beta1: float, beta2: float, eps: float, t: int, decay: str,
                 tau_iter: float | None = None, weight_decay: float | None = None) -> Scalars:
    """The table of numerics.md, in float64, each rounded once to fp32."""
    if decay == "tau":
        d = 1 - (lr / lr_peak) / tau_iter
    elif decay == "lambda":
        d = 1 - lr * weight_decay
    else:
        d = 1.0
    exact = (lr / (1 - beta1 ** t), math.sqrt(1 - beta2 ** t), d, beta1, 1 - beta1, beta2, 1 - beta2, eps)
    return Scalars(*map(f32, exact), t)


def words(s: Scalars) -> list[int]:
    """The nine 32-bit words the kernels read: eight fp32 scalars, then the step as int32."""
    return [struct.unpack("<I", struct.pack("<f", v))[0] for v in s[:8]] + [s.step & MASK32]


# --- per element (numerics.md, "Per element") ---------------------------------------------------
def r(x) -> np.ndarray:
    """Round float64 values to fp32 and hold them in float64 again."""
    return np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64)


def bf16_rne(x32: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 -> float32, ties to even on the bits; NaN stays NaN."""
    u = np.asarray(x32, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)) << np.uint64(16)
    out = (rounded & np.uint64(MASK32)).astype(np.uint32).view(np.float32)
    return np.where(np.isnan(x32), np.float32(np.nan), out)


def to_dtype(x32: np.ndarray, name: str) -> np.ndarray:
    """fp32 -> ``name`` (round to nearest even) -> fp32."""
    x32 = np.asarray(x32, dtype=np.float32)
    if name == "float32":
        return x32
    if name == "bfloat16":
        return bf16_rne(x32)
    with np.errstate(over="ignore"):
        return x32.astype(np.float16).astype(np.float32)


def stochastic_round(x32: np.ndarray, bits: np.ndarray, name: str) -> np.ndarray:
    """The stochastic rounding of numerics.md, to ``name`` and back to fp32."""
    x32 = np.asarray(x32, dtype=np.float32)
    u = x32.view(np.uint32).astype(np.uint64)
    b = np.asarray(bits, dtype=np.uint64)
    if name == "bfloat16":
        low = np.full_like(u, 16)
    else:
        e = ((u >> np.uint64(23)) & np.uint64(0xFF)).astype(np.int64)
        low = (13 + np.clip(113 - e, 0, 10)).astype(np.uint64)  # 13 bits, 13 + k below 2^-14
    mask = (np.uint64(1) << low) - np.uint64(1)
    word = ((u + (b & mask)) & np.uint64(MASK32)) & ~mask & np.uint64(MASK32)
    out = to_dtype(word.astype(np.uint32).view(np.float32), name)
    if name == "float16":
        with np.errstate(invalid="ignore", over="ignore"):  # NaN and inf are in the hard data on purpose
            ax = np.abs(x32.astype(np.float64))
            up = (b & np.uint64(0xFFFFFF)).astype(np.float64) * 2.0 ** -24 < ax * 2.0 ** 24
            tiny = np.copysign(np.where(up, 2.0 ** -24, 0.0), x32).astype(np.float32)
            out = np.where(ax < 2.0 ** -24, tiny, out)
    return np.where(np.isfinite(x32), out, to_dtype(x32, name))


def merge_remainder(p32: np.ndarray, rem: np.ndarray) -> np.ndarray:
    """The fp32 master a bf16 param (as fp32) and an int16 remainder (as numbers) hold: the
    remainder is the low half, and the param's high half was rounded up when it is negative."""
    high = p32.astype(np.float32).view(np.uint32).astype(np.int64) >> 16
    low = np.asarray(rem).astype(np.int64)
    high = (high - (low < 0)) % 0x10000
    return ((high << 16) + low % 0x10000).astype(np.uint32).view(np.float32)


def split_remainder(w32: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """fp32 master -> (bf16 param as fp32, int16 remainder as fp32 numbers): NaN -> 0x7FC00000
    first, then the nearest bf16 with ties away from zero and what is left below it."""
    u = np.where(np.isnan(w32), 0x7FC00000, w32.astype(np.float32).view(np.uint32).astype(np.int64))
    high = (u + 0x8000) // 0x10000
    low = u - (high << 16)  # in [-0x8000, 0x8000)
    return (high << 16).astype(np.uint32).view(np.float32), low.astype(np.float32)


def adamw_step(p, g, m, v, vmax, master, s: Scalars, *, maximize, param_dtype, state_dtype,
               stochastic_rounding=False, seed=0, param_id=0, grad_scale=None, found_inf=False, remainder=False):
    """One step on flat fp32 arrays (``vmax``/``master`` None when absent); returns the new
    (p, m, v, vmax, master) as fp32 arrays, each stored in its dtype and widened back.
    ``remainder``: ``master`` holds a bf16 param's int16 remainders (as numbers), not a master."""
    if found_inf:
        return p, m, v, vmax, master
    if remainder:
        new = adamw_step(p, g, m, v, vmax, merge_remainder(p, master), s, maximize=maximize,
                         param_dtype=param_dtype, state_dtype=state_dtype, grad_scale=grad_scale)
        p_new, rem_new = split_remainder(new[4])
        return (p_new, *new[1:4], rem_new)
    with np.errstate(all="ignore"):
        g = r(g)
        if grad_scale is not None:  # the scale is an fp32 tensor (GradScaler's)
            g = r(g / r(grad_scale))
        if maximize:
            g = -g
        w = r(master if master is not None else p)
        w = r(w * s.decay)
        m_new = r(r(s.beta1 * r(m)) + r(s.one_minus_beta1 * g))
        v_new = r(r(s.beta2 * r(v)) + r(s.one_minus_beta2 * r(g * g)))
        vmax_new = None if vmax is None else np.maximum(r(vmax), v_new)  # NaN from either side
        v_use = v_new if vmax is None else vmax_new
        denom = r(r(r(np.sqrt(v_use)) / s.bc2_sqrt) + s.eps)
        w = r(w - r(s.step_size * r(m_new / denom)))
    w32 = w.astype(np.float32)
    if master is not None:
        p_new, master_new = to_dtype(w32, param_dtype), w32
    elif param_dtype != "float32" and stochastic_rounding:
        bits = sr_bits(sr_key(seed, s.step, param_id), np.arange(w32.size, dtype=np.uint64))
        p_new, master_new = stochastic_round(w32, bits, param_dtype), None
    else:
        p_new, master_new = to_dtype(w32, param_dtype), None
    stored = [to_dtype(x.astype(np.float32), state_dtype) if x is not None else None for x in (m_new, v_new, vmax_new)]
    return (p_new, *stored, master_new)
