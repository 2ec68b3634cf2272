"""8-bit blockwise states in Triton (adamw_tau/formats/q8_blockwise.py; docs/numerics.md, "8-bit
states"): decode and encode for the fused kernel (adamw_fused.py), in registers.

[note: blocks in a program] The kernel's program is a block-table chunk of BLOCK elements, a
multiple of 256 (tables.py), so its 8-bit blocks are the rows of a ``[BLOCK // 256, 256]``
view: ``tl.reduce`` over a row gives each block's max with no fp32 temporaries in memory.
The max propagates NaN (``PropagateNan.ALL``): the compiled ``tl.maximum`` would otherwise
drop it, where the interpreter (NumPy) keeps it. The code is an 8-step binary search over
the ascending thresholds (a gather from a 1 KB table), the count #{k : x / max > T[k]}.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def q8_max(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def q8_load(ptr, scale_ptr, idx, mask, map_ptr):
    """8-bit codes decoded: map[code] * the block's scale, one fp32 multiply (formats.q8_blockwise)."""
    codes = tl.load(ptr + idx, mask=mask, other=0).to(tl.int32)
    return tl.load(map_ptr + codes) * tl.load(scale_ptr + idx // 256, mask=mask, other=0.0)


@triton.jit
def q8_store(x, ptr, scale_ptr, idx, mask, start, numel, thr_ptr, BLOCK: tl.constexpr):
    """Encode fp32 ``x`` by blocks of 256 of a [BLOCK // 256, 256] view: the block's max |x| (NaN
    propagates) is its new scale, x / scale (x where the scale is 0) is compared with the
    thresholds by an 8-step binary search (#{k : x̂ > T[k]}); codes and scales stored."""
    x2 = tl.reshape(tl.where(mask, x, 0.0), [BLOCK // 256, 256])
    absmax = tl.reduce(tl.abs(x2), 1, q8_max)
    divisor = tl.broadcast_to(tl.expand_dims(tl.where(absmax == 0.0, 1.0, absmax), 1), [BLOCK // 256, 256])
    xhat = tl.math.div_rn(x2, divisor)
    code = tl.zeros([BLOCK // 256, 256], tl.int32)
    for k in tl.static_range(8):
        code += tl.where(xhat > tl.load(thr_ptr + code + ((128 >> k) - 1)), 128 >> k, 0)
    tl.store(ptr + idx, tl.reshape(code, [BLOCK]).to(tl.uint8), mask=mask)
    q = start // 256 + tl.arange(0, BLOCK // 256)
    tl.store(scale_ptr + q, absmax, mask=q * 256 < numel)
