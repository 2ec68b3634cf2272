"""An independent evaluation of the contract in NumPy, element by element semantics, no torch.

Each op is done in float64 and rounded to float32 right after (np.float32 arithmetic is
avoided on purpose, so this path shares nothing with the torch reference but the formulas).
"""
from __future__ import annotations

import numpy as np

from adamw_tau.core.contract import MASK32, mix32, sr_key


def r(x):
    return np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64)


def bf16_rne(x32: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 -> float32, ties to even, NaN kept quiet."""
    u = x32.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    out = (rounded & MASK32).astype(np.uint32).view(np.float32)
    return np.where(np.isnan(x32), np.float32(np.nan), out)


def to_dtype(x32: np.ndarray, name: str) -> np.ndarray:
    if name == "float32":
        return x32.astype(np.float32)
    if name == "bfloat16":
        return bf16_rne(x32)
    return x32.astype(np.float16).astype(np.float32)


def sr_bits_np(key: int, n: int) -> np.ndarray:
    idx = np.arange(n, dtype=np.uint64)
    hi = (idx >> np.uint64(32)) & np.uint64(MASK32)
    lo = idx & np.uint64(MASK32)
    k = np.uint64(key)
    return np.array([mix32(mix32(int(h) ^ int(k)) ^ int(l)) for h, l in zip(hi, lo)], dtype=np.uint64)


def stochastic_round_np(x32: np.ndarray, bits: np.ndarray, name: str) -> np.ndarray:
    out = np.empty_like(x32, dtype=np.float32)
    for i, (x, b) in enumerate(zip(x32.astype(np.float32), bits)):
        b = int(b)
        if not np.isfinite(x):
            out[i] = to_dtype(np.array([x]), name)[0]
            continue
        u = int(np.array([x], dtype=np.float32).view(np.uint32)[0])
        if name == "bfloat16":
            shift = 16
        else:
            e = (u >> 23) & 0xFF
            if e < 103:  # |x| < 2^-24
                up = (b & 0xFFFFFF) / 2.0 ** 24 < abs(float(x)) * 2.0 ** 24
                out[i] = np.copysign(np.float32(2.0 ** -24) if up else np.float32(0.0), x)
                continue
            shift = 13 + min(max(113 - e, 0), 10)
        mask = (1 << shift) - 1
        v = ((u + (b & mask)) & MASK32) & ~mask & MASK32
        y = np.array([v], dtype=np.uint32).view(np.float32)
        out[i] = to_dtype(y, name)[0]
    return out


def adamw_step(p, g, m, v, vmax, master, s, *, amsgrad, maximize, param_dtype, state_dtype,
               stochastic_rounding=False, seed=0, param_id=0, grad_scale=None):
    """One step on flat float32 numpy arrays; returns new (p, m, v, vmax, master) as float32."""
    g = r(g)
    if grad_scale is not None:
        g = r(g / np.float64(grad_scale))
    if maximize:
        g = -g
    w = r(master if master is not None else p)
    w = r(w * s.decay)
    m_new = r(r(s.beta1 * r(m)) + r(s.one_minus_beta1 * g))
    v_new = r(r(s.beta2 * r(v)) + r(s.one_minus_beta2 * r(g * g)))
    vmax_new = np.maximum(r(vmax), v_new) if amsgrad else None
    vu = vmax_new if amsgrad else v_new
    denom = r(r(r(np.sqrt(vu)) / s.bc2_sqrt) + s.eps)
    w = r(w - r(s.step_size * r(m_new / denom)))
    w32 = w.astype(np.float32)
    if master is not None:
        p_new, master_new = to_dtype(w32, param_dtype), w32
    elif param_dtype != "float32" and stochastic_rounding:
        bits = sr_bits_np(sr_key(seed, s.step, param_id), w32.size)
        p_new, master_new = stochastic_round_np(w32, bits, param_dtype), None
    else:
        p_new, master_new = to_dtype(w32, param_dtype), None
    return (p_new, to_dtype(m_new.astype(np.float32), state_dtype), to_dtype(v_new.astype(np.float32), state_dtype),
            None if vmax_new is None else to_dtype(vmax_new.astype(np.float32), state_dtype), master_new)
