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

from .blockwise import q_encode, q_load, q_store, q_zero_rule
from .elementwise import merge_remainder, mix32, round_to, split_param, split_remainder, stochastic_round, widen

NUM_WARPS = 8


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "h_step", "h_step_size", "h_bc2_sqrt", "h_decay", "h_beta1",
                               "h_omb1", "h_beta2", "h_omb2", "h_eps"])  # by value, as ints: never specialised
def adamw_fused_kernel(
    table_ptr, blocks_ptr, scalars_ptr, grad_scale_ptr, found_inf_ptr, qt_ptr, grad_coef_ptr, seed_lo, seed_hi,
    h_step_size, h_bc2_sqrt, h_decay, h_beta1, h_omb1, h_beta2, h_omb2, h_eps, h_step,
    P_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, S_DTYPE: tl.constexpr,
    AMSGRAD: tl.constexpr, MAXIMIZE: tl.constexpr, MASTER: tl.constexpr, SR: tl.constexpr,
    HAS_SCALE: tl.constexpr, HAS_FOUND_INF: tl.constexpr, ALIGNED: tl.constexpr, HOST_SCALARS: tl.constexpr,
    BLOCK: tl.constexpr, QBITS: tl.constexpr, QBLOCK: tl.constexpr, ZERO_CODE: tl.constexpr,
    ZERO_BY_DECODE: tl.constexpr, COLUMNS: tl.constexpr,
    COL_P: tl.constexpr, COL_G: tl.constexpr, COL_M: tl.constexpr, COL_V: tl.constexpr, COL_VMAX: tl.constexpr,
    COL_MASTER: tl.constexpr, COL_NUMEL: tl.constexpr, COL_PARAM_ID: tl.constexpr, COL_M_SCALE: tl.constexpr,
    COL_V_SCALE: tl.constexpr, COL_VMAX_SCALE: tl.constexpr, HAS_COEF: tl.constexpr,
):
    # COL_*: the tensor table's columns, by name (adamw_tau.launch.tables.COLUMNS). MASTER: the
    # master form (formats.registry.MASTER_FORMS): 0 nothing, 1 an fp32 master, 2 a bf16 param's
    # int16 remainder. QBITS: 0 for plain states, else the quantized format's bits a code.
    pid = tl.program_id(0).to(tl.int64)
    row = tl.load(blocks_ptr + 2 * pid)
    start = tl.load(blocks_ptr + 2 * pid + 1)
    meta = table_ptr + row * COLUMNS
    numel = tl.load(meta + COL_NUMEL)
    p_ptr = tl.load(meta + COL_P).to(tl.pointer_type(P_DTYPE))
    g_ptr = tl.load(meta + COL_G).to(tl.pointer_type(G_DTYPE))
    m_ptr = tl.load(meta + COL_M).to(tl.pointer_type(S_DTYPE))
    v_ptr = tl.load(meta + COL_V).to(tl.pointer_type(S_DTYPE))
    vmax_ptr = tl.load(meta + COL_VMAX).to(tl.pointer_type(S_DTYPE))
    if MASTER == 2:
        w_ptr = tl.load(meta + COL_MASTER).to(tl.pointer_type(tl.int16))
    else:
        w_ptr = tl.load(meta + COL_MASTER).to(tl.pointer_type(tl.float32))
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

    g = widen(tl.load(g_ptr + idx, mask=mask, other=0.0))
    if QBITS:  # quantized states: qt_ptr holds the format's maps and thresholds (blockwise.py's note)
        smap_ptr = qt_ptr
        umap_ptr = qt_ptr + (1 << QBITS)
        sthr_ptr = qt_ptr + 2 * (1 << QBITS)
        uthr_ptr = qt_ptr + 3 * (1 << QBITS) - 1
        m_scale_ptr = tl.load(meta + COL_M_SCALE).to(tl.pointer_type(tl.float32))
        v_scale_ptr = tl.load(meta + COL_V_SCALE).to(tl.pointer_type(tl.float32))
        vmax_scale_ptr = tl.load(meta + COL_VMAX_SCALE).to(tl.pointer_type(tl.float32))
        byte_start = start // (8 // QBITS)  # the program's first code byte (a program starts a byte)
        n_bytes = (numel + (8 // QBITS) - 1) // (8 // QBITS)  # the tensor's code bytes
        if ALIGNED:  # numel a multiple of 8: n_bytes of 4 (blockwise.py: [note: whole bytes])
            byte_start = tl.multiple_of(byte_start, BLOCK // (8 // QBITS))
            n_bytes = tl.multiple_of(n_bytes, 4)
        m = q_load(m_ptr, m_scale_ptr, idx, mask, byte_start, n_bytes, start, numel, smap_ptr, BLOCK, QBITS, QBLOCK)
        v = q_load(v_ptr, v_scale_ptr, idx, mask, byte_start, n_bytes, start, numel, umap_ptr, BLOCK, QBITS, QBLOCK)
    else:
        m = widen(tl.load(m_ptr + idx, mask=mask, other=0.0))
        v = widen(tl.load(v_ptr + idx, mask=mask, other=0.0))
    if MASTER == 1:
        w = tl.load(w_ptr + idx, mask=mask, other=0.0)
    elif MASTER == 2:
        w = merge_remainder(tl.load(p_ptr + idx, mask=mask, other=0.0), tl.load(w_ptr + idx, mask=mask, other=0))
    else:
        w = widen(tl.load(p_ptr + idx, mask=mask, other=0.0))

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
        if QBITS:
            vmax = tl.maximum(q_load(vmax_ptr, vmax_scale_ptr, idx, mask, byte_start, n_bytes, start, numel, umap_ptr, BLOCK,
                                     QBITS, QBLOCK), v, propagate_nan=tl.PropagateNan.ALL)
            divides_by, divides_scale = q_encode(vmax, mask, uthr_ptr, umap_ptr, True, BLOCK, QBITS, QBLOCK)
            q_store(divides_by, divides_scale, vmax_ptr, vmax_scale_ptr, idx, mask, byte_start, n_bytes, start, numel, BLOCK,
                    QBITS, QBLOCK)
        else:
            vmax = tl.maximum(widen(tl.load(vmax_ptr + idx, mask=mask, other=0.0)), v,
                              propagate_nan=tl.PropagateNan.ALL)
            tl.store(vmax_ptr + idx, round_to(vmax, S_DTYPE), mask=mask)
        v_use = vmax
    else:
        v_use = v
    denom = tl.math.div_rn(tl.math.sqrt_rn(v_use), bc2_sqrt) + eps
    w = w - step_size * tl.math.div_rn(m, denom)

    if QBITS:
        v_code, v_scale = q_encode(v, mask, uthr_ptr, umap_ptr, True, BLOCK, QBITS, QBLOCK)
        if not AMSGRAD:
            divides_by = v_code  # the second moment the next step divides by
            divides_scale = v_scale
        m_code, m_scale = q_encode(m, mask, sthr_ptr, smap_ptr, False, BLOCK, QBITS, QBLOCK)
        m_code = q_zero_rule(m_code, divides_by, divides_scale, umap_ptr, BLOCK, QBLOCK, ZERO_CODE, ZERO_BY_DECODE)
        q_store(m_code, m_scale, m_ptr, m_scale_ptr, idx, mask, byte_start, n_bytes, start, numel, BLOCK, QBITS, QBLOCK)
        q_store(v_code, v_scale, v_ptr, v_scale_ptr, idx, mask, byte_start, n_bytes, start, numel, BLOCK, QBITS, QBLOCK)
    else:
        tl.store(m_ptr + idx, round_to(m, S_DTYPE), mask=mask)
        tl.store(v_ptr + idx, round_to(v, S_DTYPE), mask=mask)
    if MASTER == 1:
        tl.store(w_ptr + idx, w, mask=mask)
        tl.store(p_ptr + idx, round_to(w, P_DTYPE), mask=mask)
    elif MASTER == 2:
        tl.store(w_ptr + idx, split_remainder(w), mask=mask)
        tl.store(p_ptr + idx, split_param(w), mask=mask)
    elif SR:
        if HOST_SCALARS:
            step = h_step.to(tl.uint32)
        else:
            step = tl.load(scalars_ptr + 8).to(tl.uint32, bitcast=True)
        k = mix32(tl.load(meta + COL_PARAM_ID).to(tl.uint32))
        k = mix32(step ^ k)
        k = mix32(seed_hi.to(tl.uint32) ^ k)
        k = mix32(seed_lo.to(tl.uint32) ^ k)
        bits = mix32(mix32((idx >> 32).to(tl.uint32) ^ k) ^ idx.to(tl.uint32))
        tl.store(p_ptr + idx, stochastic_round(w, bits, P_DTYPE), mask=mask)
    else:
        tl.store(p_ptr + idx, round_to(w, P_DTYPE), mask=mask)


# --- launcher ---------------------------------------------------------------------------------
_TL_DTYPE = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.uint8: tl.uint8}
# The state formats by id (formats.registry; tests/formats/test_registry.py ties them): the
# Triton dtype of the state tensors, then for quantized ones the bits a code, the elements a
# scale, exp_avg's zero code and whether the zero rule reads v's decoded value (blockwise.py).
STATE_FORMATS = {0: (tl.float32,), 1: (tl.bfloat16,), 2: (tl.float16,),
                 3: (tl.uint8, 8, 256, 127, False),
                 4: (tl.uint8, 4, 128, 7, True)}
# The tensor table's columns (launch.tables.COLUMNS and csrc TensorArgs; tests/formats/
# test_registry.py ties the three): the kernel reads each by name, COL_<NAME>.
COLUMNS = ("p", "g", "m", "v", "vmax", "master", "numel", "param_id", "m_scale", "v_scale", "vmax_scale")
_COLUMN_CONSTEXPRS = {"COLUMNS": len(COLUMNS), **{f"COL_{name.upper()}": i for i, name in enumerate(COLUMNS)}}


def launch(tables, scalars, param_dtype, grad_dtype, state_format, seed, amsgrad, maximize, master,
           stochastic_rounding, grad_scale=None, found_inf=None, grad_coef=None, quant_tables=None):
    """One launch over ``tables`` (a ``tables.LaunchTables``); a program per block.

    ``state_format``: the moments' format id (STATE_FORMATS). Quantized states: ``quant_tables``
    is one fp32 tensor on the device, the signed map, the unsigned map, the signed and the
    unsigned thresholds (blockwise.py's note), which the caller provides (this layer imports
    nothing of ours).

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
            return launch(tables, scalars, param_dtype, grad_dtype, state_format, seed, amsgrad, maximize, master,
                          stochastic_rounding, grad_scale, found_inf, grad_coef, quant_tables)
    seed &= 0xFFFFFFFFFFFFFFFF
    on_host = not isinstance(scalars, torch.Tensor)
    h = scalars.words() if on_host else _NO_HOST_SCALARS
    ptr = tables.blocks if on_host else scalars  # any device pointer: never read
    adamw_fused_kernel[(tables.n_blocks,)](
        tables.tensors, tables.blocks, ptr,
        grad_scale if grad_scale is not None else ptr,
        found_inf if found_inf is not None else ptr,
        quant_tables if quant_tables is not None else ptr, grad_coef if grad_coef is not None else ptr,
        seed & 0xFFFFFFFF, seed >> 32, *h,
        **_constexprs(param_dtype, grad_dtype, int(state_format), bool(amsgrad), bool(maximize),
                      int(master), bool(stochastic_rounding), grad_scale is not None, found_inf is not None,
                      grad_coef is not None, bool(tables.aligned), on_host, tables.chunk),
    )


def _device_to_enter(table: torch.Tensor) -> int | None:
    """The CUDA device to make current for a launch over ``table``, or None: it is on the
    current device already, or on the CPU (the interpreter, which never asks for a device)."""
    index = table.get_device()
    return None if index < 0 or index == torch.cuda.current_device() else index


@functools.lru_cache(maxsize=None)
def _constexprs(param_dtype, grad_dtype, state_format, amsgrad, maximize, master, stochastic_rounding, has_scale,
                has_found_inf, has_coef, aligned, host_scalars, chunk) -> dict:
    """The kernel's compile-time arguments and launch options for one variant, built once."""
    s_dtype, qbits, qblock, zero_code, zero_by_decode = (*STATE_FORMATS[state_format], 0, 1, 0, False)[:5]
    return dict(P_DTYPE=_TL_DTYPE[param_dtype], G_DTYPE=_TL_DTYPE[grad_dtype], S_DTYPE=s_dtype,
                AMSGRAD=amsgrad, MAXIMIZE=maximize, MASTER=master,
                SR=stochastic_rounding and not master and param_dtype != torch.float32,
                HAS_SCALE=has_scale, HAS_FOUND_INF=has_found_inf, ALIGNED=aligned, HOST_SCALARS=host_scalars,
                BLOCK=chunk, QBITS=qbits, QBLOCK=qblock, ZERO_CODE=zero_code, ZERO_BY_DECODE=zero_by_decode,
                **_COLUMN_CONSTEXPRS, HAS_COEF=has_coef, num_warps=NUM_WARPS,
                enable_fp_fusion=False)


# host scalars that are never read (HOST_SCALARS=False), typed as the real ones: the bits of 0.5
_NO_HOST_SCALARS = (0x3F000000,) * 8 + (2,)
