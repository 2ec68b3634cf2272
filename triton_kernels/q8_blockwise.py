"""8-bit blockwise states in Triton (adamw_tau/formats/q8_blockwise.py; docs/numerics.md, "8-bit
states"): decode and encode for the fused kernel (adamw_fused.py), in registers.

[note: blocks in a program] The kernel's program is a block-table chunk of BLOCK elements, a
multiple of 256 (tables.py), so its 8-bit blocks are the rows of a ``[BLOCK // 256, 256]``
view: a reduction over a row gives each block's max with no fp32 temporaries in memory.
The code is an 8-step binary search over
the ascending thresholds (a gather from a 1 KB table), the count #{k : x / max > T[k]}.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def block_absmax(x2):
    """Each row's max |x|; the canonical NaN (the reference's, formats.q8_blockwise.block_absmax)
    where the row holds a NaN.

    [note: block max by built-in reductions] The max of the non-NaN values and a count of the
    NaNs, two built-in reductions, and not one ``tl.reduce`` with a NaN-propagating combine: the bits are the same on the GPU (a max of non-NaN values is exact in any
    order), but the interpreter runs a custom combine one element pair at a time in Python, 19
    of the 22 CPU s of an 8-bit parity case (measured), and NumPy's max for the built-in one.
    The compiled ``tl.max`` may drop a NaN where the interpreter keeps it; here no NaN reaches it."""
    a = tl.abs(x2)
    nan = a != a
    amax = tl.max(tl.where(nan, 0.0, a), 1)
    return tl.where(tl.max(nan.to(tl.int32), 1) > 0, float("nan"), amax)


@triton.jit
def q8_load(ptr, scale_ptr, idx, mask, map_ptr):
    """8-bit codes decoded: map[code] * the block's scale, one fp32 multiply (formats.q8_blockwise)."""
    codes = tl.load(ptr + idx, mask=mask, other=0).to(tl.int32)
    return tl.load(map_ptr + codes) * tl.load(scale_ptr + idx // 256, mask=mask, other=0.0)


@triton.jit
def q8_encode(x, mask, thr_ptr, map_ptr, SQUARES: tl.constexpr, BLOCK: tl.constexpr):
    """Codes of fp32 ``x`` by blocks of 256 of a [BLOCK // 256, 256] view, and each block's new
    scale: the block's max |x| (NaN propagates), x / scale (x where the scale is 0) compared
    with the thresholds by an 8-step binary search (#{k : x̂ > T[k]}). ``SQUARES`` (the
    unsigned map at ``map_ptr``): a positive x takes at least the block's lowest positive code,
    #{k < 255 : map[k] * scale == 0} by the same search. Returns (codes [BLOCK // 256, 256]
    int32, scales [BLOCK // 256])."""
    x2 = tl.reshape(tl.where(mask, x, 0.0), [BLOCK // 256, 256])
    absmax = block_absmax(x2)
    divisor = tl.broadcast_to(tl.expand_dims(tl.where(absmax == 0.0, 1.0, absmax), 1), [BLOCK // 256, 256])
    xhat = tl.math.div_rn(x2, divisor)
    code = tl.zeros([BLOCK // 256, 256], tl.int32)
    for k in tl.static_range(8):
        code += tl.where(xhat > tl.load(thr_ptr + code + ((128 >> k) - 1)), 128 >> k, 0)
    if SQUARES:
        lowest = tl.zeros([BLOCK // 256], tl.int32)
        for k in tl.static_range(8):
            lowest += tl.where(tl.load(map_ptr + lowest + ((128 >> k) - 1)) * absmax == 0.0, 128 >> k, 0)
        floor = tl.where(x2 > 0.0, tl.broadcast_to(tl.expand_dims(lowest, 1), [BLOCK // 256, 256]), 0)
        code = tl.maximum(code, floor)
    return code, absmax


@triton.jit
def q8_zero_rule(m_code, v_code):
    """exp_avg's codes, the zero code (127) wherever the second moment's code is 0."""
    return tl.where(v_code == 0, 127, m_code)


@triton.jit
def q8_store(code, absmax, ptr, scale_ptr, idx, mask, start, numel, BLOCK: tl.constexpr):
    """Store q8_encode's codes and scales."""
    tl.store(ptr + idx, tl.reshape(code, [BLOCK]).to(tl.uint8), mask=mask)
    q = start // 256 + tl.arange(0, BLOCK // 256)
    tl.store(scale_ptr + q, absmax, mask=q * 256 < numel)
