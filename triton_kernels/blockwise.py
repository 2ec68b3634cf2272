"""Blockwise quantized states in Triton (adamw_tau/formats/registry.py; docs/numerics.md, "8-bit
states" and the other quantized formats' sections): decode and encode for the fused kernel (adamw_fused.py), in
registers. One set of helpers for every blockwise format, told by adamw_fused.STATE_FORMATS:
``QBITS`` bits a code (8, or 4: two codes a byte), ``QBLOCK`` elements a scale, and the zero rule.

[note: blocks in a program] The kernel's program is a block-table chunk of BLOCK elements, a
multiple of 256 (tables.py), so its quantization blocks are the rows of a ``[BLOCK // QBLOCK,
QBLOCK]`` view: a reduction over a row gives each block's max with no fp32 temporaries in
memory. The code is a QBITS-step binary search over the ascending thresholds (a gather from
the format's table), the count #{k : x / max > T[k]}.

[note: the format's table] One fp32 tensor per format: the signed map, the unsigned map (2^QBITS
values each), then the signed and the unsigned thresholds (2^QBITS - 1 each); ``map_ptr`` and
``thr_ptr`` below point into it (adamw_fused.py: quant_offsets).

[note: codes smaller than a byte] 8 // QBITS codes a byte, element i in bits (i % per) * QBITS
of byte i // per: the low nibble first for two a byte. A program's chunk starts a byte, so its
bytes are its own; the last byte of a tensor whose size is not a multiple gets 0 in its unused
bits (the reference's pack): a masked element's code is never stored.
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
def q_codes(ptr, idx, mask, byte_start, n_bytes, BLOCK: tl.constexpr, QBITS: tl.constexpr):
    """The codes of the program's elements ``idx`` (int32): a byte each, or two a byte (the note
    above). [note: whole bytes] The 4-bit codes are read as the program's BLOCK // 2 bytes from
    ``byte_start`` (its first element's byte, start // 2) below ``n_bytes`` (the tensor's,
    ceil(numel / 2)), both hinted aligned where the launch is, and split into nibbles, not a byte
    per element at idx // 2: the compiled loads were 24 scalar byte loads a thread (sm_90 PTX)."""
    tl.static_assert(QBITS == 4 or QBITS == 8, "codes of 4 or 8 bits: another width needs its own unpack")
    if QBITS == 4:
        pair = tl.arange(0, BLOCK // 2)
        byte = tl.load(ptr + byte_start + pair, mask=byte_start + pair < n_bytes, other=0).to(tl.int32)
        return tl.reshape(tl.join(byte & 15, byte >> 4), [BLOCK])
    else:
        return tl.load(ptr + idx, mask=mask, other=0).to(tl.int32)


@triton.jit
def q_load(ptr, scale_ptr, idx, mask, byte_start, n_bytes, start, numel, map_ptr, BLOCK: tl.constexpr,
           QBITS: tl.constexpr, QBLOCK: tl.constexpr):
    """Codes decoded: map[code] * the block's scale, one fp32 multiply. The program's
    BLOCK // QBLOCK scales are read once, as a vector, and broadcast over their blocks (a load
    per element before: the aligned 8-bit kernel's sm_90 PTX had 38 scalar word loads of data a
    thread, 17 since)."""
    codes = q_codes(ptr, idx, mask, byte_start, n_bytes, BLOCK, QBITS)
    q = start // QBLOCK + tl.arange(0, BLOCK // QBLOCK)
    scale = tl.load(scale_ptr + q, mask=q * QBLOCK < numel, other=0.0)
    scales = tl.reshape(tl.broadcast_to(tl.expand_dims(scale, 1), [BLOCK // QBLOCK, QBLOCK]), [BLOCK])
    return tl.load(map_ptr + codes) * scales


@triton.jit
def q_encode(x, mask, thr_ptr, map_ptr, SQUARES: tl.constexpr, BLOCK: tl.constexpr, QBITS: tl.constexpr,
             QBLOCK: tl.constexpr):
    """Codes of fp32 ``x`` by blocks of QBLOCK of a [BLOCK // QBLOCK, QBLOCK] view, and each
    block's new scale: the block's max |x| (NaN propagates), x / scale (x where the scale is 0)
    compared with the thresholds by a QBITS-step binary search (#{k : x̂ > T[k]}). ``SQUARES``
    (the unsigned map at ``map_ptr``): a positive x takes at least the block's lowest positive
    code, #{k < 2^QBITS - 1 : map[k] * scale == 0} by the same search. Returns (codes
    [BLOCK // QBLOCK, QBLOCK] int32, scales [BLOCK // QBLOCK])."""
    x2 = tl.reshape(tl.where(mask, x, 0.0), [BLOCK // QBLOCK, QBLOCK])
    absmax = block_absmax(x2)
    divisor = tl.broadcast_to(tl.expand_dims(tl.where(absmax == 0.0, 1.0, absmax), 1), [BLOCK // QBLOCK, QBLOCK])
    xhat = tl.math.div_rn(x2, divisor)
    code = tl.zeros([BLOCK // QBLOCK, QBLOCK], tl.int32)
    for k in tl.static_range(QBITS):
        code += tl.where(xhat > tl.load(thr_ptr + code + (((1 << (QBITS - 1)) >> k) - 1)), (1 << (QBITS - 1)) >> k, 0)
    if SQUARES:
        lowest = tl.zeros([BLOCK // QBLOCK], tl.int32)
        for k in tl.static_range(QBITS):
            lowest += tl.where(tl.load(map_ptr + lowest + (((1 << (QBITS - 1)) >> k) - 1)) * absmax == 0.0,
                               (1 << (QBITS - 1)) >> k, 0)
        floor = tl.where(x2 > 0.0, tl.broadcast_to(tl.expand_dims(lowest, 1), [BLOCK // QBLOCK, QBLOCK]), 0)
        code = tl.maximum(code, floor)
    return code, absmax


@triton.jit
def q_zero_rule(m_code, v_code, v_scale, unsigned_map_ptr, BLOCK: tl.constexpr, QBLOCK: tl.constexpr,
                ZERO_CODE: tl.constexpr, ZERO_BY_DECODE: tl.constexpr):
    """exp_avg's codes, its ZERO_CODE wherever the second moment the next step divides by decodes
    to 0: by its decoded value, map[code] * scale == 0 (ZERO_BY_DECODE: for a zero-free
    unsigned map), or where its code is 0 (the 8-bit format's rule)."""
    if ZERO_BY_DECODE:
        s = tl.broadcast_to(tl.expand_dims(v_scale, 1), [BLOCK // QBLOCK, QBLOCK])
        return tl.where(tl.load(unsigned_map_ptr + v_code) * s == 0.0, ZERO_CODE, m_code)
    else:
        return tl.where(v_code == 0, ZERO_CODE, m_code)


@triton.jit
def q_store(code, absmax, ptr, scale_ptr, idx, mask, byte_start, n_bytes, start, numel, BLOCK: tl.constexpr,
            QBITS: tl.constexpr, QBLOCK: tl.constexpr):
    """Store q_encode's codes (packed when smaller than a byte: the note above; two a byte, from
    ``byte_start`` as q_codes reads them) and scales."""
    if QBITS == 4:  # two codes a byte
        lo, hi = tl.split(tl.reshape(code, [BLOCK // 2, 2]))
        pair = tl.arange(0, BLOCK // 2)
        hi = tl.where(start + 2 * pair + 1 < numel, hi, 0)  # an odd tensor's last high nibble: 0
        tl.store(ptr + byte_start + pair, (lo | (hi << 4)).to(tl.uint8), mask=byte_start + pair < n_bytes)
    else:
        tl.store(ptr + idx, tl.reshape(code, [BLOCK]).to(tl.uint8), mask=mask)
    q = start // QBLOCK + tl.arange(0, BLOCK // QBLOCK)
    tl.store(scale_ptr + q, absmax, mask=q * QBLOCK < numel)
