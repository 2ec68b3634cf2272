"""The fused kernel's per-element helpers in Triton (adamw_fused.py): widening and rounding on the
bits, the bf16 + int16 remainder split (formats/bf16_remainder.py), stochastic rounding and its
hash (core/contract.py). Each is the reference's rule, written so that the interpreter and the
compiled kernel agree (docs/numerics.md, known differences).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def mix32(x):
    # lowbias32, modulo 2^32 (contract.mix32)
    x = x ^ (x >> 16)
    x = x * tl.full((), 0x7FEB352D, tl.uint32)
    x = x ^ (x >> 15)
    x = x * tl.full((), 0x846CA68B, tl.uint32)
    return x ^ (x >> 16)


@triton.jit
def round_to(x, OUT_DTYPE: tl.constexpr):
    """fp32 -> OUT_DTYPE, to nearest even. bf16 is done on the bits (NaN -> 0x7FC0, as torch):
    the interpreter's own bf16 cast does not round to nearest even."""
    if OUT_DTYPE == tl.bfloat16:
        u = x.to(tl.uint32, bitcast=True)
        r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        r = tl.where(x != x, 0x7FC0, r)
        return r.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(OUT_DTYPE)


@triton.jit
def widen(x):
    """bf16/fp16/fp32 -> fp32, exact. bf16 goes through its bits: the interpreter's cast
    mangles bf16 subnormals."""
    if x.dtype == tl.bfloat16:
        return (x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    else:
        return x.to(tl.float32)


@triton.jit
def merge_remainder(p, rem):
    """bf16 param + int16 remainder -> the fp32 master (formats/bf16_remainder.py), on the bits."""
    hi = (p.to(tl.uint16, bitcast=True).to(tl.uint32) - (rem < 0).to(tl.uint32)) & 0xFFFF
    return ((hi << 16) | rem.to(tl.uint16, bitcast=True).to(tl.uint32)).to(tl.float32, bitcast=True)


@triton.jit
def split_param(w):
    """fp32 master -> its bf16 param: ties away from zero on the bits, a NaN -> 0x7FC0."""
    u = w.to(tl.uint32, bitcast=True)
    u = tl.where((u & 0x7FFFFFFF) > 0x7F800000, tl.full(u.shape, 0x7FC00000, tl.uint32), u)
    return ((u + 0x8000) >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def split_remainder(w):
    """fp32 master -> its int16 remainder (the low half; 0 for a NaN, canonicalised)."""
    u = w.to(tl.uint32, bitcast=True)
    u = tl.where((u & 0x7FFFFFFF) > 0x7F800000, tl.full(u.shape, 0x7FC00000, tl.uint32), u)
    return (u & 0xFFFF).to(tl.uint16).to(tl.int16, bitcast=True)


@triton.jit
def stochastic_round(w, bits, OUT_DTYPE: tl.constexpr):
    u = w.to(tl.uint32, bitcast=True)
    if OUT_DTYPE == tl.bfloat16:
        mask = tl.full(w.shape, 0xFFFF, tl.uint32)
    else:
        e = ((u >> 23) & 0xFF).to(tl.int32)
        shift = 13 + tl.minimum(tl.maximum(113 - e, 0), 10)
        mask = ((tl.full(w.shape, 1, tl.uint32) << shift.to(tl.uint32)) - 1).to(tl.uint32)
    keep = mask ^ tl.full((), 0xFFFFFFFF, tl.uint32)
    y = round_to(((u + (bits & mask)) & keep).to(tl.float32, bitcast=True), OUT_DTYPE)
    if OUT_DTYPE == tl.float16:
        ax = tl.abs(w)
        q = ax * 16777216.0
        r24 = (bits & 0xFFFFFF).to(tl.float32) * 5.9604644775390625e-08
        up = tl.where(r24 < q, 5.9604644775390625e-08, 0.0).to(tl.uint32, bitcast=True)
        up = (up | (u & tl.full((), 0x80000000, tl.uint32))).to(tl.float32, bitcast=True)
        y = tl.where(ax < 5.9604644775390625e-08, round_to(up, OUT_DTYPE), y)
    finite = tl.abs(w) < float("inf")
    return tl.where(finite, y, round_to(w, OUT_DTYPE))
