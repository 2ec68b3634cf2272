"""Multi-tensor, one-pass fused AdamW in Triton, bitwise equal to ``adamw_tau.core.reference``.

One launch steps every tensor of a bucket: the tensor table holds each tensor's pointers,
and the block table maps each program to (tensor, first element); both are built by
``adamw_tau.launch.tables``. Each element of p, g, m, v (and master, max_exp_avg_sq) is read once
and written once.

[note: wide loads]
Pointers read from a table carry no alignment, so Triton emitted scalar 2- and 4-byte
loads: bf16 states ran at 73.5% of copy bandwidth on an H100 (measured). For a table that
``tables`` marks aligned (every address 16-byte aligned, every numel a multiple of 8) the
kernel says so with ``tl.multiple_of`` on the pointers, the block start and numel, and
Triton emits 16-byte vector loads and stores; with those hints the measured figure was
99.2%. The hints are promises: a table with any other tensor is launched with ALIGNED=False.

[note: bitwise]
The contract asks for correctly rounded fp32 ops in a fixed order with no FMA.
``enable_fp_fusion=False`` stops the backend from contracting a*b+c; ``div_rn`` and
``sqrt_rn`` are the IEEE ops (plain ``/`` and ``tl.sqrt`` are approximate on NVIDIA).
Under TRITON_INTERPRET=1 the same kernel runs on CPU through NumPy, where every fp32
op is IEEE: CI checks the kernel's math there.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from .q8_blockwise import q8_encode, q8_load, q8_store, q8_zero_rule

NUM_WARPS = 8


@triton.jit
def _mix32(x):
    # lowbias32, modulo 2^32 (contract.mix32)
    x = x ^ (x >> 16)
    x = x * tl.full((), 0x7FEB352D, tl.uint32)
    x = x ^ (x >> 15)
    x = x * tl.full((), 0x846CA68B, tl.uint32)
    return x ^ (x >> 16)


@triton.jit
def _round(x, OUT_DTYPE: tl.constexpr):
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
def _widen(x):
    """bf16/fp16/fp32 -> fp32, exact. bf16 goes through its bits: the interpreter's cast
    mangles bf16 subnormals."""
    if x.dtype == tl.bfloat16:
        return (x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    else:
        return x.to(tl.float32)


@triton.jit
def _merge_remainder(p, rem):
    """bf16 param + int16 remainder -> the fp32 master (formats/bf16_remainder.py), on the bits."""
    hi = (p.to(tl.uint16, bitcast=True).to(tl.uint32) - (rem < 0).to(tl.uint32)) & 0xFFFF
    return ((hi << 16) | rem.to(tl.uint16, bitcast=True).to(tl.uint32)).to(tl.float32, bitcast=True)


@triton.jit
def _split_param(w):
    """fp32 master -> its bf16 param: ties away from zero on the bits, a NaN -> 0x7FC0."""
    u = w.to(tl.uint32, bitcast=True)
    u = tl.where((u & 0x7FFFFFFF) > 0x7F800000, tl.full(u.shape, 0x7FC00000, tl.uint32), u)
    return ((u + 0x8000) >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def _split_remainder(w):
    """fp32 master -> its int16 remainder (the low half; 0 for a NaN, canonicalised)."""
    u = w.to(tl.uint32, bitcast=True)
    u = tl.where((u & 0x7FFFFFFF) > 0x7F800000, tl.full(u.shape, 0x7FC00000, tl.uint32), u)
    return (u & 0xFFFF).to(tl.uint16).to(tl.int16, bitcast=True)


@triton.jit
def _stochastic_round(w, bits, OUT_DTYPE: tl.constexpr):
    u = w.to(tl.uint32, bitcast=True)
    if OUT_DTYPE == tl.bfloat16:
        mask = tl.full(w.shape, 0xFFFF, tl.uint32)
    else:
        e = ((u >> 23) & 0xFF).to(tl.int32)
        shift = 13 + tl.minimum(tl.maximum(113 - e, 0), 10)
        mask = ((tl.full(w.shape, 1, tl.uint32) << shift.to(tl.uint32)) - 1).to(tl.uint32)
    keep = mask ^ tl.full((), 0xFFFFFFFF, tl.uint32)
    y = _round(((u + (bits & mask)) & keep).to(tl.float32, bitcast=True), OUT_DTYPE)
    if OUT_DTYPE == tl.float16:
        ax = tl.abs(w)
        q = ax * 16777216.0
        r24 = (bits & 0xFFFFFF).to(tl.float32) * 5.9604644775390625e-08
        up = tl.where(r24 < q, 5.9604644775390625e-08, 0.0).to(tl.uint32, bitcast=True)
        up = (up | (u & tl.full((), 0x80000000, tl.uint32))).to(tl.float32, bitcast=True)
        y = tl.where(ax < 5.9604644775390625e-08, _round(up, OUT_DTYPE), y)
    finite = tl.abs(w) < float("inf")
    return tl.where(finite, y, _round(w, OUT_DTYPE))


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "h_step", "h_step_size", "h_bc2_sqrt", "h_decay", "h_beta1",
                               "h_omb1", "h_beta2", "h_omb2", "h_eps"])  # by value, as ints: never specialised
def adamw_fused_kernel(
    table_ptr, blocks_ptr, scalars_ptr, grad_scale_ptr, found_inf_ptr, q8_ptr, grad_coef_ptr, seed_lo, seed_hi,
    h_step_size, h_bc2_sqrt, h_decay, h_beta1, h_omb1, h_beta2, h_omb2, h_eps, h_step,
    P_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, S_DTYPE: tl.constexpr,
    AMSGRAD: tl.constexpr, MAXIMIZE: tl.constexpr, MASTER: tl.constexpr, SR: tl.constexpr,
    HAS_SCALE: tl.constexpr, HAS_FOUND_INF: tl.constexpr, ALIGNED: tl.constexpr, HOST_SCALARS: tl.constexpr,
    BLOCK: tl.constexpr, Q8: tl.constexpr, COLUMNS: tl.constexpr, HAS_COEF: tl.constexpr,
):
    # columns of the tensor table: adamw_tau.launch.tables.COLUMNS. MASTER: what the master
    # column holds (tables.master_form): 0 nothing, 1 an fp32 master, 2 a bf16 param's int16 remainder
    pid = tl.program_id(0).to(tl.int64)
    row = tl.load(blocks_ptr + 2 * pid)
    start = tl.load(blocks_ptr + 2 * pid + 1)
    meta = table_ptr + row * COLUMNS
    numel = tl.load(meta + 6)
    p_ptr = tl.load(meta + 0).to(tl.pointer_type(P_DTYPE))
    g_ptr = tl.load(meta + 1).to(tl.pointer_type(G_DTYPE))
    m_ptr = tl.load(meta + 2).to(tl.pointer_type(S_DTYPE))
    v_ptr = tl.load(meta + 3).to(tl.pointer_type(S_DTYPE))
    vmax_ptr = tl.load(meta + 4).to(tl.pointer_type(S_DTYPE))
    if MASTER == 2:
        w_ptr = tl.load(meta + 5).to(tl.pointer_type(tl.int16))
    else:
        w_ptr = tl.load(meta + 5).to(tl.pointer_type(tl.float32))
    if HAS_FOUND_INF:
        # a skipped step loads and stores nothing: it has no elements. One scalar load and a
        # scalar select, not a broadcast load (found_inf_ptr + zeros_like(idx)) in the mask:
        # the compiler cannot tell that such a load is constant, and every masked access fell
        # back to scalar ones (PTX for sm_90, bf16 states: 40 scalar loads and 24 scalar stores
        # against 4 and 3 of 16 bytes). Nor a scalar bool in the mask: the interpreter widens
        # it to an fp32 block and `mask & ok` raises (docs/numerics.md, known differences).
        numel = tl.where(tl.load(found_inf_ptr) == 0.0, numel, 0)
    if ALIGNED:
        start = tl.multiple_of(start, BLOCK)
        numel = tl.multiple_of(numel, 8)
        p_ptr = tl.multiple_of(p_ptr, 16)
        g_ptr = tl.multiple_of(g_ptr, 16)
        m_ptr = tl.multiple_of(m_ptr, 16)
        v_ptr = tl.multiple_of(v_ptr, 16)
        vmax_ptr = tl.multiple_of(vmax_ptr, 16)
        w_ptr = tl.multiple_of(w_ptr, 16)
    idx = start + tl.arange(0, BLOCK).to(tl.int64)
    mask = idx < numel

    if HOST_SCALARS:  # by value as fp32 bits, int32: a subnormal float is fp64 in the interpreter (numerics.md)
        step_size = h_step_size.to(tl.float32, bitcast=True)
        bc2_sqrt = h_bc2_sqrt.to(tl.float32, bitcast=True)
        decay = h_decay.to(tl.float32, bitcast=True)
        beta1 = h_beta1.to(tl.float32, bitcast=True)
        omb1 = h_omb1.to(tl.float32, bitcast=True)
        beta2 = h_beta2.to(tl.float32, bitcast=True)
        omb2 = h_omb2.to(tl.float32, bitcast=True)
        eps = h_eps.to(tl.float32, bitcast=True)
    else:  # built on the device (device-counted steps)
        step_size = tl.load(scalars_ptr + 0)
        bc2_sqrt = tl.load(scalars_ptr + 1)
        decay = tl.load(scalars_ptr + 2)
        beta1 = tl.load(scalars_ptr + 3)
        omb1 = tl.load(scalars_ptr + 4)
        beta2 = tl.load(scalars_ptr + 5)
        omb2 = tl.load(scalars_ptr + 6)
        eps = tl.load(scalars_ptr + 7)

    g = _widen(tl.load(g_ptr + idx, mask=mask, other=0.0))
    if Q8:  # 8-bit states: q8_ptr holds the signed map, the unsigned map and their thresholds
        m_scale_ptr = tl.load(meta + 8).to(tl.pointer_type(tl.float32))
        v_scale_ptr = tl.load(meta + 9).to(tl.pointer_type(tl.float32))
        vmax_scale_ptr = tl.load(meta + 10).to(tl.pointer_type(tl.float32))
        m = q8_load(m_ptr, m_scale_ptr, idx, mask, q8_ptr)
        v = q8_load(v_ptr, v_scale_ptr, idx, mask, q8_ptr + 256)
    else:
        m = _widen(tl.load(m_ptr + idx, mask=mask, other=0.0))
        v = _widen(tl.load(v_ptr + idx, mask=mask, other=0.0))
    if MASTER == 1:
        w = tl.load(w_ptr + idx, mask=mask, other=0.0)
    elif MASTER == 2:
        w = _merge_remainder(tl.load(p_ptr + idx, mask=mask, other=0.0), tl.load(w_ptr + idx, mask=mask, other=0))
    else:
        w = _widen(tl.load(p_ptr + idx, mask=mask, other=0.0))

    if HAS_SCALE:
        g = tl.math.div_rn(g, tl.load(grad_scale_ptr))
    g = g * tl.load(grad_coef_ptr) if HAS_COEF else g  # gradient clipping, after unscaling (core/grad_norm.py)
    if MAXIMIZE:
        # not -g: compiled for an H100, -g of +0.0 gave +0.0 (the interpreter and the
        # contract give -0.0); a multiply by -1 flips the sign of zero on both (measured)
        g = g * -1.0
    w = w * decay
    m = beta1 * m + omb1 * g
    v = beta2 * v + omb2 * (g * g)
    if AMSGRAD:
        if Q8:
            vmax = tl.maximum(q8_load(vmax_ptr, vmax_scale_ptr, idx, mask, q8_ptr + 256), v,
                              propagate_nan=tl.PropagateNan.ALL)
            divides_by, vmax_scale = q8_encode(vmax, mask, q8_ptr + 767, q8_ptr + 256, True, BLOCK)
            q8_store(divides_by, vmax_scale, vmax_ptr, vmax_scale_ptr, idx, mask, start, numel, BLOCK)
        else:
            vmax = tl.maximum(_widen(tl.load(vmax_ptr + idx, mask=mask, other=0.0)), v,
                              propagate_nan=tl.PropagateNan.ALL)
            tl.store(vmax_ptr + idx, _round(vmax, S_DTYPE), mask=mask)
        v_use = vmax
    else:
        v_use = v
    denom = tl.math.div_rn(tl.math.sqrt_rn(v_use), bc2_sqrt) + eps
    w = w - step_size * tl.math.div_rn(m, denom)

    if Q8:
        v_code, v_scale = q8_encode(v, mask, q8_ptr + 767, q8_ptr + 256, True, BLOCK)
        if not AMSGRAD:
            divides_by = v_code  # the second moment the next step divides by
        m_code, m_scale = q8_encode(m, mask, q8_ptr + 512, q8_ptr, False, BLOCK)
        q8_store(q8_zero_rule(m_code, divides_by), m_scale, m_ptr, m_scale_ptr, idx, mask, start, numel, BLOCK)
        q8_store(v_code, v_scale, v_ptr, v_scale_ptr, idx, mask, start, numel, BLOCK)
    else:
        tl.store(m_ptr + idx, _round(m, S_DTYPE), mask=mask)
        tl.store(v_ptr + idx, _round(v, S_DTYPE), mask=mask)
    if MASTER == 1:
        tl.store(w_ptr + idx, w, mask=mask)
        tl.store(p_ptr + idx, _round(w, P_DTYPE), mask=mask)
    elif MASTER == 2:
        tl.store(w_ptr + idx, _split_remainder(w), mask=mask)
        tl.store(p_ptr + idx, _split_param(w), mask=mask)
    elif SR:
        if HOST_SCALARS:
            step = h_step.to(tl.uint32)
        else:
            step = tl.load(scalars_ptr + 8).to(tl.uint32, bitcast=True)
        k = _mix32(tl.load(meta + 7).to(tl.uint32))
        k = _mix32(step ^ k)
        k = _mix32(seed_hi.to(tl.uint32) ^ k)
        k = _mix32(seed_lo.to(tl.uint32) ^ k)
        bits = _mix32(_mix32((idx >> 32).to(tl.uint32) ^ k) ^ idx.to(tl.uint32))
        tl.store(p_ptr + idx, _stochastic_round(w, bits, P_DTYPE), mask=mask)
    else:
        tl.store(p_ptr + idx, _round(w, P_DTYPE), mask=mask)


# --- launcher ---------------------------------------------------------------------------------
_TL_DTYPE = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.uint8: tl.uint8}
COLUMNS = 11  # launch.tables.COLUMNS


def launch(tables, scalars, param_dtype, grad_dtype, state_dtype, seed, amsgrad, maximize, master,
           stochastic_rounding, grad_scale=None, found_inf=None, grad_coef=None, q8_tables=None):
    """One launch over ``tables`` (a ``tables.LaunchTables``); a program per block.

    8-bit states (``state_dtype`` uint8): ``q8_tables`` is one fp32 tensor on the device, the
    signed map, the unsigned map, the signed and the unsigned thresholds (256, 256, 255, 255
    values: formats.q8_blockwise), which the caller provides (this layer imports nothing of ours).

    ``scalars``: the fp32 tensor on the device (device-counted steps), or a
    ``contract.StepScalars`` whose ``words()`` go by value as int32 arguments (no copy per step).

    [note: device] Triton launches on ``torch.cuda.current_device()`` and that device's
    current stream (triton/backends/driver.py), whatever device the pointers are on: params
    on cuda:1 under a current cuda:0 would run on cuda:0, an illegal address without peer
    access and unordered against cuda:1's stream with it. A table on another device is
    launched with its device made current for the call, so the kernel runs there, on that
    device's current stream. On the current device (the common case) the launch pays one
    ``get_device()`` and one ``current_device()`` (the query Triton itself makes per
    launch), 0.41 µs measured on the 2-core CPU machine with cudaGetDevice stubbed, and
    enters no guard.
    """
    index = _device_to_enter(tables.tensors)
    if index is not None:
        with torch.cuda.device(index):
            return launch(tables, scalars, param_dtype, grad_dtype, state_dtype, seed, amsgrad, maximize, master,
                          stochastic_rounding, grad_scale, found_inf, grad_coef, q8_tables)
    seed &= 0xFFFFFFFFFFFFFFFF
    on_host = not isinstance(scalars, torch.Tensor)
    h = scalars.words() if on_host else _NO_HOST_SCALARS
    ptr = tables.blocks if on_host else scalars  # any device pointer: never read
    adamw_fused_kernel[(tables.n_blocks,)](
        tables.tensors, tables.blocks, ptr,
        grad_scale if grad_scale is not None else ptr,
        found_inf if found_inf is not None else ptr,
        q8_tables if q8_tables is not None else ptr, grad_coef if grad_coef is not None else ptr,
        seed & 0xFFFFFFFF, seed >> 32, *h,
        **_constexprs(param_dtype, grad_dtype, state_dtype, bool(amsgrad), bool(maximize),
                      int(master), bool(stochastic_rounding), grad_scale is not None, found_inf is not None,
                      grad_coef is not None, bool(tables.aligned), on_host, tables.chunk),
    )


def _device_to_enter(table: torch.Tensor) -> int | None:
    """The CUDA device to make current for a launch over ``table``, or None: it is on the
    current device already, or on the CPU (the interpreter, which never asks for a device)."""
    index = table.get_device()
    return None if index < 0 or index == torch.cuda.current_device() else index


@functools.lru_cache(maxsize=None)
def _constexprs(param_dtype, grad_dtype, state_dtype, amsgrad, maximize, master, stochastic_rounding, has_scale,
                has_found_inf, has_coef, aligned, host_scalars, chunk) -> dict:
    """The kernel's compile-time arguments and launch options for one variant, built once."""
    return dict(P_DTYPE=_TL_DTYPE[param_dtype], G_DTYPE=_TL_DTYPE[grad_dtype], S_DTYPE=_TL_DTYPE[state_dtype],
                AMSGRAD=amsgrad, MAXIMIZE=maximize, MASTER=master,
                SR=stochastic_rounding and not master and param_dtype != torch.float32,
                HAS_SCALE=has_scale, HAS_FOUND_INF=has_found_inf, ALIGNED=aligned, HOST_SCALARS=host_scalars,
                BLOCK=chunk, Q8=state_dtype == torch.uint8, COLUMNS=COLUMNS, HAS_COEF=has_coef, num_warps=NUM_WARPS,
                enable_fp_fusion=False)


# host scalars that are never read (HOST_SCALARS=False), typed as the real ones: the bits of 0.5
_NO_HOST_SCALARS = (0x3F000000,) * 8 + (2,)
